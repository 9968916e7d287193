"""The single exception type of lora-audit.

Every failure that stops a file from being read is an ``AuditError`` carrying one stable finding code
(``LA1xx`` for the container), a one-line message and, where it helps, the offending field. The batch
catches it, records it on the file's AuditRecord and goes on.
"""

from __future__ import annotations


class AuditError(Exception):
    """A coded, expected failure. ``code`` is a key of rules/findings.yaml."""

    def __init__(self, code: str, message: str, *, where: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.where = where
