"""Fixtures of the security tests (see ``fake_issuers.py``)."""

from __future__ import annotations

import pytest
from fake_issuers import FakeIssuer


@pytest.fixture
def issuer() -> FakeIssuer:
    """A fresh issuer ``felix`` with a new Ed25519 key."""
    return FakeIssuer()
