"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path


def real_fixtures_dir() -> Path:
    """The real third-party adapter files: ``shared/fixtures/real`` beside the repository checkout."""
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
