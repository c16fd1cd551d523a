"""Shared test configuration: hypothesis profiles.

``ci`` (selected when the CI environment variable is set) keeps the run short; ``dev`` is
the default for local runs. ``FELIX_HYPOTHESIS_PROFILE`` overrides both (``thorough`` for a
long local fuzz).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(
    os.environ.get("FELIX_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
