"""Every check module, imported in report order."""

from __future__ import annotations

import importlib

from conformance.registry import CHECKS, Check

__all__ = ["MODULES", "all_checks"]

MODULES = (
    "conformance.checks_session",
    "conformance.checks_framing",
    "conformance.checks_limits",
    "conformance.checks_pubsub",
    "conformance.checks_queues",
    "conformance.checks_cache_admin",
    "conformance.checks_model",
    "conformance.checks_settle",
    "conformance.checks_auth",
    "conformance.checks_rbac",
    "conformance.checks_exchange",
)
"""The check modules, in report order."""


def all_checks() -> list[Check]:
    """Every registered check (importing the check modules registers them)."""
    for module in MODULES:
        importlib.import_module(module)
    return list(CHECKS)
