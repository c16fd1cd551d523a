"""``felix bench --profile DIR``: py-spy samples the broker and the load generators while
each figure runs.

Theory of operation. Before anything is measured, :func:`find_py_spy` finds the
executable and :func:`check_attach` has it read one stack of a load-generator process
(``py-spy dump --nonblocking``): py-spy reads other processes' memory, which needs root,
``CAP_SYS_PTRACE`` or a permissive ``kernel.yama.ptrace_scope``; without it the run stops
there (:class:`ProfileUnavailable`, exit 1). Then, per figure, :meth:`Profiler.start`
runs one ``py-spy record --format raw --nonblocking --rate R`` per process (the target
is never stopped) and waits until each says it samples; :meth:`Profiler.finish` stops them
with SIGINT (py-spy writes its file then), draws each recording's flamegraph and returns
the per-layer breakdown of :mod:`.profiles` per process. Files:
``DIR/NNN-FIGURE/PROCESS.txt`` (collapsed stacks), ``.svg`` (flamegraph) and ``.log``
(what py-spy said).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .flamegraph import render
from .profiles import Breakdown, Stacks, breakdown, merge, parse_collapsed

__all__ = ["DEFAULT_RATE", "ProfileUnavailable", "Profiler", "check_attach", "find_py_spy"]

DEFAULT_RATE = 200
"""Samples per second and process: enough for shares within a few percent over 2 s."""
START_TIMEOUT = 15.0
"""Seconds py-spy may take to attach and say it samples."""
STOP_TIMEOUT = 15.0
HOW_TO_ALLOW = (
    "py-spy reads the memory of the processes it samples (ptrace): run felix bench as root, "
    "or give py-spy CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep PY_SPY; in a container, "
    "--cap-add SYS_PTRACE), or allow it with sysctl kernel.yama.ptrace_scope=0"
)


class ProfileUnavailable(RuntimeError):
    """``--profile`` cannot work here: py-spy is missing or may not attach."""


def find_py_spy() -> str:
    """The py-spy executable: on ``PATH`` or next to this Python's.

    Raises:
        ProfileUnavailable: it is not installed.
    """
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise ProfileUnavailable(
            "--profile needs py-spy, which is not installed: pip install py-spy "
            "(it is in the bench extra: pip install 'felix[bench]')"
        )
    return found


def check_attach(executable: str, pid: int, timeout: float = START_TIMEOUT) -> None:
    """Have py-spy read one stack of process ``pid``.

    Raises:
        ProfileUnavailable: it could not (not allowed to attach, most often).
    """
    try:
        done = subprocess.run(
            [executable, "dump", "--nonblocking", "--pid", str(pid)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProfileUnavailable(f"--profile: py-spy did not run: {exc}. {HOW_TO_ALLOW}") from None
    if done.returncode != 0:
        lines = (done.stderr + done.stdout).splitlines()
        said = next((ln for ln in lines if ln.strip()), "no message")
        raise ProfileUnavailable(
            f"--profile: py-spy cannot attach to process {pid} ({said.strip()}). {HOW_TO_ALLOW}"
        )


@dataclass(slots=True)
class _Recording:
    process: str
    path: Path
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    sampling: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        """Keep what py-spy says (in memory and in ``PROCESS.log``); note when it samples."""
        assert self.popen.stdout is not None
        with self.path.with_suffix(".log").open("w") as log:
            for line in self.popen.stdout:
                if len(self.lines) < 100:
                    self.lines.append(line.rstrip())
                    log.write(line)
                    log.flush()
                if "Sampling process" in line:
                    self.sampling.set()
        self.sampling.set()  # py-spy ended: nothing more to wait for


@dataclass(slots=True)
class _Session:
    key: str
    recordings: list[_Recording]
    started: float
    seconds: float = 0.0
    stopped: bool = False


class Profiler:
    """py-spy recordings, one session of several processes at a time.

    Args:
        executable: py-spy (:func:`find_py_spy`).
        directory: where the recordings go (created).
        rate: samples per second and process.
    """

    def __init__(self, executable: str, directory: Path, rate: int = DEFAULT_RATE) -> None:
        self.executable = executable
        self.directory = directory
        self.rate = rate
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sessions: list[_Session] = []
        self._count = 0

    def start(self, key: str, targets: dict[str, int]) -> None:
        """Stop the running session (its samples stay, under its key) and start sampling
        each ``{process name: pid}`` of ``targets`` under ``key``."""
        self.stop()
        self._count += 1
        folder = self.directory / f"{self._count:03d}-{_slug(key)}"
        folder.mkdir(parents=True, exist_ok=True)
        recordings = []
        for process, pid in targets.items():
            path = folder / f"{_slug(process)}.txt"
            popen = subprocess.Popen(
                [
                    self.executable,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(self.rate),
                    "--nonblocking",
                    "--output",
                    str(path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # py-spy says "Sampling process ..." on stdout
                stderr=subprocess.STDOUT,
                text=True,
            )
            recording = _Recording(process, path, popen)
            threading.Thread(target=recording.read, daemon=True).start()
            recordings.append(recording)
        for recording in recordings:
            recording.sampling.wait(START_TIMEOUT)
        self._sessions.append(_Session(key, recordings, time.monotonic()))

    def stop(self) -> None:
        """Stop the running session's recordings (SIGINT: py-spy writes its file)."""
        for session in self._sessions:
            if session.stopped:
                continue
            session.seconds = time.monotonic() - session.started
            session.stopped = True
            for recording in session.recordings:
                if recording.popen.poll() is None:
                    recording.popen.send_signal(signal.SIGINT)
            for recording in session.recordings:
                try:
                    recording.popen.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    recording.popen.kill()
                    recording.popen.wait(timeout=5)

    def finish(self, key: str) -> dict[str, Breakdown]:
        """Stop, then the breakdown per process of every session under ``key`` (summed:
        a figure measured in rounds), with each recording's flamegraph drawn; a process
        py-spy could not record gets an empty breakdown naming what py-spy said."""
        self.stop()
        mine = [s for s in self._sessions if s.key == key]
        self._sessions = [s for s in self._sessions if s.key != key]
        parts: dict[str, list[Stacks]] = {}
        seconds: dict[str, float] = {}
        files: dict[str, list[str]] = {}
        said: dict[str, str] = {}
        for session in mine:
            for recording in session.recordings:
                try:
                    stacks = parse_collapsed(recording.path.read_text())
                except OSError:
                    stacks = Stacks()
                    said[recording.process] = " / ".join(recording.lines[-3:])
                parts.setdefault(recording.process, []).append(stacks)
                seconds[recording.process] = seconds.get(recording.process, 0) + session.seconds
                names = files.setdefault(recording.process, [])
                if stacks:
                    svg = recording.path.with_suffix(".svg")
                    svg.write_text(render(stacks, f"{key}: {recording.process}"))
                    names += [str(recording.path), str(svg)]
        out = {}
        for process, stacks_list in parts.items():
            result = breakdown(merge(stacks_list))
            window = seconds[process] * self.rate
            result.busy = result.samples / window if window > 0 else None
            result.files = files[process]
            if process in said:
                result.top = [(f"py-spy: {said[process]}", 0)]
            out[process] = result
        return out

    def close(self) -> None:
        """Stop whatever still samples (the run ended or failed)."""
        self.stop()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")[:80] or "x"
