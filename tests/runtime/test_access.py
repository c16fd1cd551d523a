"""felix_server.access: the authentication seam and its token-list authenticator."""

from __future__ import annotations

from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_server.access import ANONYMOUS, Principal, Refusal, token_list


def hello(token: str | None) -> m.Hello:
    return m.Hello(versions=[2], token=token)


def test_without_tokens_everyone_is_anonymous() -> None:
    authenticate = token_list(None)
    assert authenticate(hello(None)) is ANONYMOUS and authenticate(hello("x")) is ANONYMOUS


def test_a_token_list_accepts_its_tokens_only() -> None:
    authenticate = token_list(["alpha", "beta"])
    assert isinstance(authenticate(hello("beta")), Principal)
    for token in (None, "", "gamma", "alph"):
        refused = authenticate(hello(token))
        assert isinstance(refused, Refusal) and refused.code == ErrorCode.UNAUTHENTICATED
