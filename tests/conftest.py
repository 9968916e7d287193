"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

# as the CLI does: one BLAS thread per process (see cli.py), set before numpy is first imported
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def real_fixtures_dir() -> Path:
    """The real third-party adapter files: ``shared/fixtures/real`` beside the repository checkout."""
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
