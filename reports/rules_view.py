"""`lora-audit rules list|show`: the knowledge under rules/ as tables (rendering only; the data comes from the
loaders in audit.fingerprint, audit.licensing and audit.findings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from audit.reports.safe import text

KINDS = ("licenses", "policies", "bases", "findings")


def rows(kind: str, data: Mapping[str, Any]) -> list[dict[str, str]]:
    """Plain rows for one kind (also the --json form)."""
    out: list[dict[str, str]] = []
    if kind == "licenses":
        for lic in sorted(data.values(), key=lambda x: x.id):
            g = lic.data["grant"]
            out.append({"id": lic.id, "name": lic.name, "version": lic.version or "", "published": lic.published or "",
                        "level": lic.level, "model_commercial": g["model_commercial"],
                        "output_commercial": g["output_commercial"], "hosted_service": g["hosted_service"],
                        "url": lic.url or ""})
    elif kind == "policies":
        for p in sorted(data.values(), key=lambda x: x.id):
            out.append({"id": p.id, "name": p.name, "mode": str(p.context.get("mode")), "rules": str(len(p.rules)),
                        "description": p.description})
    elif kind == "bases":
        for fam in sorted(data.values(), key=lambda x: x.id):
            out.append({"id": fam.id, "name": fam.name, "variants": ", ".join(v.id for v in fam.variants)})
    elif kind == "findings":
        for code in sorted(data):
            entry = data[code]
            out.append({"code": code, "severity": entry.severity, "title": entry.title})
    return out


def render_list(console: Console, kind: str, items: Sequence[dict[str, str]]) -> None:
    if not items:
        return
    columns = {"licenses": ("id", "name", "version", "level", "model_commercial", "output_commercial",
                            "hosted_service"),
               "policies": ("id", "name", "mode", "rules"),
               "bases": ("id", "name", "variants"),
               "findings": ("code", "severity", "title")}[kind]
    table = Table(title=f"{kind} ({len(items)})", title_justify="left", show_lines=False)
    for c in columns:
        table.add_column(c.replace("_", " "), overflow="fold")
    for row in items:
        table.add_row(*(text(row.get(c, ""), limit=None) for c in columns))
    console.print(table)


def render_source(console: Console, title: str, body: str) -> None:
    console.print(text(title, style="bold", limit=None))
    for line in body.splitlines():
        console.print(text(line, limit=None))
