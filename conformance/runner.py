"""Run checks one after another, each bounded, and report PASS / FAIL / SKIP.

:func:`run_checks` is what ``python -m conformance`` and the self-tests call. Each check
gets its own :class:`~conformance.context.Context`; a failure in one never stops the run.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from xml.etree import ElementTree as ET

from conformance.context import Context, Options, Suite
from conformance.registry import Check, Skip
from conformance.wire import CheckFailed

__all__ = ["Outcome", "Result", "junit_xml", "run_checks", "summary_line"]


class Outcome(StrEnum):
    """How a check ended."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome."""

    check: Check
    """The check."""
    outcome: Outcome
    """PASS, FAIL or SKIP."""
    reason: str
    """Why it failed or was skipped ('' on a pass)."""
    seconds: float
    """How long it took."""

    def line(self) -> str:
        """The report line."""
        text = f"{self.outcome.value} {self.check.name} [{self.check.section}]"
        return f"{text}: {self.reason}" if self.reason else text


async def _run_one(check: Check, suite: Suite) -> Result:
    ctx = Context(suite)
    start = time.monotonic()
    outcome, reason = Outcome.PASS, ""
    try:
        async with asyncio.timeout(check.timeout):
            await check.fn(ctx)
    except Skip as exc:
        outcome, reason = Outcome.SKIP, str(exc)
    except CheckFailed as exc:
        outcome, reason = Outcome.FAIL, str(exc)
    except TimeoutError:
        outcome, reason = Outcome.FAIL, f"the check did not finish within {check.timeout:g}s"
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = Outcome.FAIL
        reason = f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
    finally:
        try:
            async with asyncio.timeout(5.0):
                await ctx.close()
        except (TimeoutError, ConnectionError):
            pass
    return Result(check, outcome, reason, time.monotonic() - start)


async def run_checks(
    checks: list[Check], options: Options, report: Callable[[Result], None] | None = None
) -> list[Result]:
    """Run ``checks`` against the broker in ``options``.

    Args:
        checks: what to run, in order.
        options: endpoint, token, working tenant/namespace and hooks.
        report: called with each result as soon as it is known.

    Returns:
        Every result, in order. If the suite cannot even set up (no connection, handshake
        refused), every check fails with that reason.
    """
    suite = Suite(options)
    results: list[Result] = []
    try:
        try:
            async with asyncio.timeout(options.endpoint.wait * 3):
                await suite.start()
        except (CheckFailed, TimeoutError) as exc:
            reason = f"setup failed: {exc or 'timeout'}"
            for c in checks:
                results.append(Result(c, Outcome.FAIL, reason, 0.0))
                if report:
                    report(results[-1])
            return results
        for c in checks:
            results.append(await _run_one(c, suite))
            if report:
                report(results[-1])
    finally:
        try:
            async with asyncio.timeout(5.0):
                await suite.close()
        except (TimeoutError, ConnectionError):
            pass
    return results


def summary_line(results: list[Result]) -> str:
    """``N passed, N failed, N skipped``."""
    count = {o: sum(1 for r in results if r.outcome is o) for o in Outcome}
    return (
        f"{count[Outcome.PASS]} passed, {count[Outcome.FAIL]} failed, {count[Outcome.SKIP]} skipped"
    )


def junit_xml(results: list[Result]) -> bytes:
    """The results as a JUnit XML document (one testsuite, one testcase per check)."""
    suite = ET.Element(
        "testsuite",
        name="felix-conformance",
        tests=str(len(results)),
        failures=str(sum(r.outcome is Outcome.FAIL for r in results)),
        skipped=str(sum(r.outcome is Outcome.SKIP for r in results)),
        errors="0",
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=r.check.section,
            name=r.check.name,
            time=f"{r.seconds:.3f}",
        )
        if r.outcome is Outcome.FAIL:
            ET.SubElement(case, "failure", message=r.reason).text = r.check.summary
        elif r.outcome is Outcome.SKIP:
            ET.SubElement(case, "skipped", message=r.reason)
    return bytes(ET.tostring(suite, encoding="utf-8", xml_declaration=True))
