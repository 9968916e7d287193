"""Terminal view of an adapter's license chain and policy verdicts (``lora-audit license``; ``inspect`` reuses
:func:`renderables`). Reads ``record.licensing`` and ``record.policies``; evaluates nothing.

Not legal advice: the disclaimer is printed first, and every reason cites the license text (id, clause, URL)
it rests on. Every string that came from the file, a sidecar or a policy goes through
``audit.reports.safe.text`` (escaped, never rich markup).
"""

from __future__ import annotations

from typing import Any

from audit.reports.safe import text
from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.record import VERDICTS, AuditRecord, Licensing, PolicyVerdict, Reason

# Strictness order of policy verdicts (shared by the scan table and the JUnit renderer).
VERDICT_RANK = {name: i for i, name in enumerate(VERDICTS)}
VERDICT_STYLE = {"allow": "bold green", "allow-with-conditions": "cyan", "needs-review": "bold yellow",
                 "deny": "bold red"}
VERDICT_SHORT = {"allow": "allow", "allow-with-conditions": "cond.", "needs-review": "review", "deny": "DENY"}
ACTION_STYLE = {"deny": "bold red", "review": "yellow", "condition": "cyan", "note": "dim"}
LEVEL_STYLE = {"P": "green", "P-tag": "green", "S": "yellow", "U": "bold yellow"}
LEVEL_MEANING = {"P": "primary text read", "P-tag": "primary, from a tagged release", "S": "secondary source",
                 "U": "unverified"}
CLAIM_STYLE = {"consistent": "green", "conflicts": "bold red", "more-restrictive": "cyan",
               "unrecognised": "yellow", "unverifiable": "dim"}
BASIS_MEANING = {
    "asserted": "base asserted by the user (--assume-base)",
    "claimed": "taken from the adapter's own metadata (unverifiable from the tensors)",
    "candidates": "every base the tensors allow was evaluated; the strictest verdict applies",
    "unknown": "base model unknown: no inherited license could be determined",
}


def fact(value: Any) -> str:
    """A deployer fact as the user would write it: unknown when not given."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def verdict_rank(verdict: str) -> int:
    """Strictness of a verdict; an unknown verdict string counts as needs-review (fail safe)."""
    return VERDICT_RANK.get(verdict, VERDICT_RANK["needs-review"])


def verdict_text(verdict: str, *, short: bool = False) -> Text:
    label = VERDICT_SHORT.get(verdict, verdict) if short else verdict
    return text(label, VERDICT_STYLE.get(verdict, "bold yellow"), limit=40)


def _kv(label: str, value: Any, style: str = "", limit: int = 200) -> Text:
    t = Text(f"{label} ", style="bold")
    t.append_text(text(value, style, limit=limit))
    return t


def _citation(r: Reason) -> Text:
    """ "license-id §clause <url>" for a reason, or empty."""
    t = Text()
    if r.license:
        t.append_text(text(r.license, "bold", limit=60))
    if r.clause:
        if t.plain:
            t.append(" ")
        t.append_text(text(r.clause, limit=40))
    if r.url:
        if t.plain:
            t.append("  ")
        t.append_text(text(r.url, "dim underline", limit=160))
    return t


def _reasons(title: str, reasons: list[Reason], several_lineages: bool) -> list:
    """One block per reason: action, rule and why; then what it cites (license id, clause, URL) on its own
    line so the URL is never cut; then the remedy and the lineage it concerns."""
    if not reasons:
        return []
    t = Table.grid(padding=(0, 1))
    t.add_column(no_wrap=True, min_width=13)
    t.add_column(overflow="fold")
    for r in reasons:
        body = text(r.rule, "dim", limit=40)
        body.append("  ")
        body.append_text(text(r.message, limit=300))
        cites = _citation(r)
        if cites.plain:
            body.append("\n")
            body.append("cites ", style="dim")
            body.append_text(cites)
        if r.remediation:
            body.append("\n")
            body.append("remedy ", style="dim italic")
            body.append_text(text(r.remediation, "italic", limit=300))
        if several_lineages or r.lineage:
            body.append("\n")
            body.append("lineage ", style="dim")
            body.append_text(text(r.lineage or "all", limit=60))
        t.add_row(Text("    ") + text(r.action, ACTION_STYLE.get(r.action, ""), limit=20), body)
    return [Text(f"  {title}", style="bold"), t]


def _lineages(lic: Licensing) -> list:
    out: list = []
    for lin in lic.lineages:
        title = Text("Lineage ", style="bold")
        title.append_text(text(lin.id, "bold", limit=60))
        title.append("  ")
        title.append_text(text(lin.name, limit=80))
        title.append("  family ", style="dim")
        title.append_text(text(lin.family, "dim", limit=40))
        out.append(title)
        t = Table.grid(padding=(0, 2))
        t.add_column(no_wrap=True)
        t.add_column(overflow="fold")
        for link in lin.chain:
            ref = link.license
            body = text(ref.name, "bold", limit=120)
            body.append("  (")
            body.append_text(text(ref.id, limit=60))
            if ref.spdx:
                body.append(", SPDX ")
                body.append_text(text(ref.spdx, limit=80))
            body.append(")\n")
            body.append("version ", style="dim")
            body.append_text(text(ref.version or "–", limit=30))
            body.append("  published ", style="dim")
            body.append_text(text(ref.published or "–", limit=20))
            body.append("  level ", style="dim")
            body.append_text(text(ref.level, LEVEL_STYLE.get(ref.level, "bold yellow"), limit=10))
            meaning = LEVEL_MEANING.get(ref.level)
            if meaning:
                body.append(f" ({meaning})", style="dim")
            body.append("\n")
            body.append_text(text(ref.url, "underline", limit=300) if ref.url else Text("no URL", style="dim"))
            body.append("\n")
            body.append("via ", style="dim")
            body.append_text(text(link.via, "dim", limit=200))
            t.add_row(Text("  ") + text(link.role, "bold", limit=20), body)
        if not lin.chain:
            t.add_row(Text("  –"), Text("no license known for this lineage", style="yellow"))
        out.append(t)
        if lin.note:
            out.append(Text("  note: ", style="dim") + text(lin.note, "dim", limit=300))
    return out


def _declared(lic: Licensing) -> Table | None:
    if not lic.declared:
        return None
    t = Table(title=Text("The adapter's own license claims (as written; checked against the lineage)"),
              title_justify="left")
    for heading in ("source", "key", "value", "resolves to", "verdict", "why"):
        t.add_column(heading)
    for c in lic.declared:
        t.add_row(text(c.source, limit=20), text(c.key, limit=40), text(c.value, limit=80),
                  text(c.license or "unrecognised", "" if c.license else "yellow", limit=60),
                  text(c.verdict, CLAIM_STYLE.get(c.verdict, ""), limit=30), text(c.reason or "", limit=200))
    return t


def _flag(value: Any) -> Text:
    if value is True:
        return Text("yes", style="green")
    if value is False:
        return Text("no", style="red")
    if value is None:
        return Text("–", style="dim")
    if isinstance(value, (list, tuple)):
        return text(", ".join(str(v) for v in value[:20]) or "none", limit=160)
    return text(value, limit=160)


def _civitai(lic: Licensing) -> Table | None:
    flags = lic.civitai
    if not flags or not isinstance(flags, dict):
        return None
    t = Table(title=Text("Civitai permission flags (set by the uploader; cannot grant more than the base license)"),
              title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for key, value in list(flags.items())[:40]:
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in list(value.items())[:20])
        t.add_row(text(key, limit=40), _flag(value))
    return t


def _policy(p: PolicyVerdict, several_lineages: bool) -> list:
    out: list = []
    line = Text("Policy ", style="bold")
    line.append_text(text(p.name, "bold", limit=80))
    line.append(" (")
    line.append_text(text(p.policy, limit=60))
    line.append("): ")
    line.append_text(verdict_text(p.verdict))
    out.append(line)
    if p.context:
        ctx = Text("  evaluated with: ", style="dim")
        shown = [f"{k}={fact(v)}" for k, v in list(p.context.items())[:30]]
        ctx.append_text(text(", ".join(shown), "dim", limit=300))
        out.append(ctx)
    for title, items in (("reasons", p.reasons), ("conditions the deployer must meet", p.conditions),
                         ("notes", p.notes)):
        out.extend(_reasons(title, items, several_lineages))
    if len(p.by_lineage) > 1 or (p.by_lineage and several_lineages):
        per = Text("  per lineage: ", style="bold")
        for i, (lineage, verdict) in enumerate(p.by_lineage.items()):
            if i:
                per.append(", ")
            per.append_text(text(lineage, limit=60))
            per.append(" ")
            per.append_text(verdict_text(verdict))
        out.append(per)
    return out


def renderables(record: AuditRecord) -> list:
    """The license section of a record as rich renderables (disclaimer first)."""
    lic = record.licensing
    out: list = [text(lic.disclaimer if lic else Licensing().disclaimer, "italic yellow", limit=400)]
    if record.status == "error" and record.error:
        e = record.error
        out.append(Text.assemble(("error ", "bold red"), (e.code, "bold"), ": ") + text(e.message, limit=400))
    if lic is None:
        if not record.policies:
            out.append(Text("no license evaluation in this record", style="dim"))
    else:
        basis = Text("lineage basis ", style="bold")
        basis.append_text(text(lic.basis, "bold", limit=30))
        meaning = BASIS_MEANING.get(lic.basis)
        if meaning:
            basis.append(f"  ({meaning})", style="dim")
        out.append(basis)
        if lic.basis_detail:
            out.append(Text("  ") + text(lic.basis_detail, limit=400))
        if lic.asserted:
            out.append(_kv("  asserted base", lic.asserted, "bold", limit=80))
        if not lic.lineages:
            out.append(Text("no lineage: the inherited license is unknown", style="bold yellow"))
        out.extend(_lineages(lic))
        for part in (_declared(lic), _civitai(lic)):
            if part is not None:
                out.append(part)
    several = bool(lic and len(lic.lineages) > 1)
    for p in record.policies:
        out.extend(_policy(p, several))
    return out


def render(record: AuditRecord, console: Console) -> None:
    """Print the license section of one record: the disclaimer first, then the file, lineage and verdicts."""
    parts = renderables(record)
    console.print(parts[0])
    title = Text("License chain of ", style="bold")
    title.append_text(text(record.file.path, "bold", limit=160, middle=True))
    console.print(title)
    for part in parts[1:]:
        console.print(part)
