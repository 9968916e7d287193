"""JSON output: the AuditRecord itself (schema_version inside), one document or JSON Lines."""

from __future__ import annotations

from audit.record import AuditRecord


def render(record: AuditRecord, *, indent: int | None = 2) -> str:
    return record.to_json(indent=indent)


def render_many(records: list[AuditRecord]) -> str:
    return "\n".join(r.to_json(indent=None) for r in records) + "\n"
