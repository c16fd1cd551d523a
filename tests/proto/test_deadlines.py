"""felix_proto.deadlines: the one lazy-deletion deadline heap, against a plain dict model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from felix_proto.deadlines import Deadlines

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 20), st.none() | st.integers(0, 100)),
        st.tuples(st.just("discard"), st.integers(0, 20), st.none()),
        st.tuples(st.just("pop"), st.none(), st.integers(0, 100)),
    ),
    max_size=400,
)


@settings(max_examples=300)
@given(_ops)
def test_deadlines_match_a_dict_model(ops: list[tuple[str, int | None, int | None]]) -> None:
    deadlines: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    for op, key, value in ops:
        if op == "set":
            assert key is not None
            deadlines.set(key, None if value is None else float(value))
            if value is None:
                model.pop(key, None)
            else:
                model[key] = float(value)
        elif op == "discard":
            assert key is not None
            deadlines.discard(key)
            model.pop(key, None)
        else:
            assert value is not None
            due = deadlines.pop_due(float(value))
            expected = sorted((d, k) for k, d in model.items() if d <= value)
            assert [model[k] for k in due] == [d for d, _ in expected]
            assert sorted(due) == sorted(k for _, k in expected)
            for k in due:
                del model[k]
        assert deadlines.earliest() == min(model.values(), default=None)
        assert len(deadlines) == len(model)
        assert all(deadlines.get(k) == d and k in deadlines for k, d in model.items())
        assert len(deadlines._heap) <= 2 * len(model) + 64  # stale entries stay bounded


def test_setting_the_same_deadline_again_pushes_nothing() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("a", 5.0)
    deadlines.set("a", 5.0)
    assert len(deadlines._heap) == 1
    deadlines.set("a", 3.0)  # moved earlier: the old entry is stale
    assert deadlines.earliest() == 3.0 and deadlines.pop_due(10.0) == ["a"]
    assert deadlines.earliest() is None and deadlines.pop_due(10.0) == []
