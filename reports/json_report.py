"""JSON output: the AuditRecord itself (schema_version inside), one document or JSON Lines."""

from __future__ import annotations

from audit.record import AuditRecord


def render(record: AuditRecord, *, indent: int | None = None) -> str:
    """Compact by default: the C JSON encoder is used only without indentation (several times faster on
    records with thousands of spectrum values); pipe through ``python -m json.tool`` to read it."""
    return record.to_json(indent=indent)


def render_many(records: list[AuditRecord]) -> str:
    return "\n".join(r.to_json(indent=None) for r in records) + "\n"
