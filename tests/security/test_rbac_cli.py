"""``felix admin role ...`` and ``felix admin binding ...`` against a broker (in process:
``felix_client.cli.main``, one call per command)."""

from __future__ import annotations

import json

import pytest
from brokers import Broker, unique_name

from felix_client.cli import main


def felix(broker: Broker, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--server", broker.url, "--ca", broker.ca_file, "--tenant", "default", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_role_and_binding_commands(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    role, binding = unique_name("role"), unique_name("binding")
    create = ["--allow", "subscribe:default/*", "--allow", "publish", "--description", "readers"]
    created = felix(broker, capsys, "admin", "role", "create", role, *create)
    assert created == (0, f"created role {role}\n", "")
    code, out, _ = felix(broker, capsys, "admin", "role", "list")
    assert code == 0 and f"{role}\tpublish:*/* subscribe:default/*" in out.splitlines()
    code, out, _ = felix(broker, capsys, "-o", "json", "admin", "role", "describe", role)
    described = json.loads(out)
    assert (described["kind"], described["tenant"], described["namespace"]) == (
        "role",
        "default",
        "",
    )
    assert described["settings"] == {
        "permissions": ["publish:*/*", "subscribe:default/*"],
        "description": "readers",
    }
    assert felix(broker, capsys, "admin", "role", "update", role, "--allow", "cache.read")[0] == 0
    code, out, _ = felix(broker, capsys, "admin", "role", "describe", role)
    assert out.splitlines()[:2] == [f"role: {role}", 'permissions: ["cache.read:*/*"]']

    members = ["--role", role, "--subject", "ci", "--group", "analysts"]
    assert felix(broker, capsys, "admin", "binding", "create", binding, *members)[0] == 0
    code, out, _ = felix(broker, capsys, "admin", "binding", "list")
    assert f"{binding}\trole:{role}\tsubject:ci group:analysts" in out.splitlines()
    code, out, _ = felix(broker, capsys, "admin", "binding", "describe", binding)
    assert 'subjects: ["ci"]' in out.splitlines()
    assert felix(broker, capsys, "admin", "binding", "delete", binding)[0] == 0
    assert felix(broker, capsys, "admin", "role", "delete", role)[0] == 0
    code, _, err = felix(broker, capsys, "admin", "role", "describe", role)
    assert code == 1 and f"role default/{role} not found" in err
    code, _, err = felix(broker, capsys, "admin", "role", "create", role, "--allow", "fly")
    assert code == 1 and "unknown action 'fly'" in err
    code, _, err = felix(broker, capsys, "admin", "binding", "create", binding, "--subject", "x")
    assert code == 2 and "--role" in err  # a usage error
