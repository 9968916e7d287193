"""Helpers for the tests that run a scan in a child process and kill or stop it (test_scan, test_cli_license)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def traced(trace: Path) -> list[str]:
    """The paths the scan's workers started on (the LORA_AUDIT_SCAN_TRACE file), in order."""
    return trace.read_text().splitlines() if trace.exists() else []


def wait_for_traced(proc: subprocess.Popen, trace: Path, n: int, timeout: float = 120) -> None:
    """Until the workers have started on ``n`` files; fails if the child exits or makes no progress first."""
    deadline = time.monotonic() + timeout
    while len(traced(trace)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the scan made no progress"
        time.sleep(0.05)


def wait_group_gone(pgid: int, timeout: float, message: str) -> None:
    """Until no process of group ``pgid`` is left; past ``timeout`` the group is killed and the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(message)
        time.sleep(0.05)


def committed_paths(db: Path) -> set[str]:
    """The paths whose records the scan cache holds."""
    con = sqlite3.connect(db)
    try:
        return {os.fsdecode(p) for (p,) in con.execute("SELECT path FROM files")}
    finally:
        con.close()
