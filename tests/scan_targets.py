"""Worker targets for tests/test_scan.py (``"scan_targets:<name>"``; this folder is on the workers' sys.path).

Each takes ``(path, options, keep_layers)`` like :func:`audit.scan.analyse_one` and misbehaves only for files
whose name contains a marker word, analysing every other file normally, so one scan shows both the failure and
that the files after it still succeed.
"""

from __future__ import annotations

import os
import signal
import time

from audit.scan import analyse_one


def _marked(path: str, word: str) -> bool:
    return word in os.path.basename(path)


def hang(path, options, keep_layers):
    """'hang' files never finish."""
    while _marked(path, "hang"):
        time.sleep(3600)
    return analyse_one(path, options, keep_layers)


def allocate(path, options, keep_layers):
    """'boom' files ask for 4 GiB of address space (untouched, so it costs nothing where it is granted): a
    MemoryError under a smaller worker memory limit, a non-JSON answer (an LA128 record) without one."""
    if _marked(path, "boom"):
        import numpy as np

        block = np.empty(4 << 30, dtype=np.uint8)
        return str(block.nbytes)
    return analyse_one(path, options, keep_layers)


def crash(path, options, keep_layers):
    """'abort' files abort the process (SIGABRT), 'segv' files take SIGSEGV, 'exit' files exit with status 3,
    'raise' files raise an unexpected exception."""
    if _marked(path, "abort"):
        os.abort()
    if _marked(path, "segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)
    if _marked(path, "exit"):
        os._exit(3)
    if _marked(path, "raise"):
        raise ZeroDivisionError("planted")
    return analyse_one(path, options, keep_layers)


def slow(path, options, keep_layers):
    """Every file takes an extra 0.3 s."""
    time.sleep(0.3)
    return analyse_one(path, options, keep_layers)


def varied(path, options, keep_layers):
    """'late' files take an extra second; others none, so completion order differs from path order."""
    if _marked(path, "late"):
        time.sleep(1.0)
    return analyse_one(path, options, keep_layers)
