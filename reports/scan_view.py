"""Streaming table for ``lora-audit scan --format table``: one line per file as it completes, then a summary.

The CLI calls :func:`header` once, :func:`row` for each finished record, and keeps a :class:`Tally` (counters
only, no records) for :func:`summary` and :func:`summary_dict`. Reads the records; evaluates nothing. File
names and every other file-derived string go through ``audit.reports.safe`` (escaped, never rich markup).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from audit.reports.license_view import (
    VERDICT_SHORT,
    VERDICT_STYLE,
    VERDICTS,
    verdict_rank,
)
from audit.reports.safe import text
from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.findings import SEVERITIES, SEVERITY_RANK
from audit.record import AuditRecord

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "red", "critical": "bold red", "clean": "green"}
CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red", "none": "dim"}
SEV_WIDTH = 8
BASE_WIDTH = 22
LICENSE_WIDTH = 28
MIN_NAME = 16
WANT_NAME = 32  # file-name cells the layout tries to keep before shrinking other columns
GAP = 1


def _policy_width(policy_id: str) -> int:
    """Column width of one policy's verdict: a function of its id only, so header and rows agree."""
    return min(max(len(policy_id), 6), 14)


def _cell(t: Text, width: int) -> Text:
    """``t`` cut (with an ellipsis) or padded to exactly ``width`` cells."""
    t = t.copy()
    t.no_wrap = True
    if t.cell_len > width:
        t.truncate(width, overflow="ellipsis")
    t.pad_right(width - t.cell_len)
    return t


def _middle(value: str, width: int) -> Text:
    """``value`` escaped and shortened in the middle to fit ``width`` cells (escapes and wide characters count)."""
    t = text(value, limit=width, middle=True)
    if t.cell_len <= width:
        return t
    lo, hi = 3, width - 1  # the longest cut whose escaped, rendered form still fits
    best = text(value, limit=lo, middle=True)
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = text(value, limit=mid, middle=True)
        if cand.cell_len <= width:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    return best


def _layout(console: Console, policy_ids: Sequence[str]) -> tuple[int, int, int]:
    """Widths of the base, license and file columns: a function of the console width and the policy ids only,
    so the header and every row agree. A narrow console shrinks the base and license columns first."""
    rest = console.width - sum(_policy_width(p) + GAP for p in policy_ids) - SEV_WIDTH - 3 * GAP
    base, lic = BASE_WIDTH, LICENSE_WIDTH
    while rest - base - lic < WANT_NAME and lic > 12:
        lic -= 1
    while rest - base - lic < WANT_NAME and base > 12:
        base -= 1
    if rest - base - lic < MIN_NAME + 8:  # very narrow: leave out the license, then the base column
        lic = 0
        rest += GAP
    if rest - base - lic < MIN_NAME + 8:
        base = 0
        rest += GAP
    return base, lic, max(MIN_NAME, rest - base - lic)


def _line(cells: list[Text]) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, c in enumerate(cells):
        if i:
            out.append(" " * GAP)
        out.append_text(c)
    return out


def _print(console: Console, line: Text) -> None:
    console.print(line, no_wrap=True, overflow="ellipsis", crop=True, soft_wrap=False)


def header(console: Console, policy_ids: Sequence[str]) -> None:
    """Column headings; ``policy_ids`` in the order the records' ``policies`` list them."""
    cells = [_cell(text(p, "bold", limit=40), _policy_width(p)) for p in policy_ids]
    base_w, lic_w, name_w = _layout(console, policy_ids)
    cells.append(_cell(Text("severity", "bold"), SEV_WIDTH))
    if base_w:
        cells.append(_cell(Text("base (confidence)", "bold"), base_w))
    if lic_w:
        cells.append(_cell(Text("inherited license", "bold"), lic_w))
    cells.append(_cell(Text("file", "bold"), name_w))
    _print(console, _line(cells))


def inherited_licenses(record: AuditRecord) -> list[str]:
    """License ids the adapter inherits over all evaluated lineages (author claims left out), first seen first."""
    ids: list[str] = []
    lic = record.licensing
    for lin in lic.lineages if lic else ():
        for link in lin.chain:
            if link.role != "lora_author" and link.license.id not in ids:
                ids.append(link.license.id)
    return ids


def max_severity(record: AuditRecord) -> str | None:
    if not record.findings:
        return None
    return max(record.findings, key=lambda f: SEVERITY_RANK.get(f.severity, 0)).severity


def row(console: Console, record: AuditRecord, policy_ids: Sequence[str] | None = None) -> None:
    """One line for one finished record.

    ``policy_ids`` (as given to :func:`header`) fixes the verdict columns; without it the record's own
    ``policies`` order is used (the same for every record of one scan).
    """
    verdicts = {p.policy: p.verdict for p in record.policies}
    ids = list(policy_ids) if policy_ids is not None else [p.policy for p in record.policies]
    cells: list[Text] = []
    for pid in ids:
        v = verdicts.get(pid)
        label = Text("–", style="dim") if v is None else \
            text(VERDICT_SHORT.get(v, v), VERDICT_STYLE.get(v, "bold yellow"), limit=20)
        cells.append(_cell(label, _policy_width(pid)))
    sev = max_severity(record)
    cells.append(_cell(Text(sev or "clean", style=SEVERITY_STYLE.get(sev or "clean", "")), SEV_WIDTH))
    if record.status == "error":
        code = record.error.code if record.error else "error"
        base = Text("ERROR ", style="bold red") + text(code, "bold red", limit=10)
        licenses = text(record.error.message if record.error else "", "red", limit=80)
    else:
        fp = record.fingerprint
        if fp is None:
            base = Text("–", style="dim")
        else:
            base = text(fp.family, limit=30)
            base.append(" ")
            base.append(fp.confidence, style=CONFIDENCE_STYLE.get(fp.confidence, ""))
        ids_ = inherited_licenses(record)
        licenses = text(",".join(ids_), limit=200) if ids_ else Text("unknown" if record.licensing else "–",
                                                                      style="dim")
    base_w, lic_w, name_w = _layout(console, ids)
    if base_w:
        cells.append(_cell(base, base_w))
    if lic_w:
        cells.append(_cell(licenses, lic_w))
    cells.append(_cell(_middle(record.file.path, name_w), name_w))
    _print(console, _line(cells))


class Tally:
    """Counters of a scan, fed one record at a time (no record is kept)."""

    def __init__(self) -> None:
        self.files = 0
        self.analysed = 0  # analysed in this run
        self.cached = 0  # taken from the scan cache
        self.errors = 0  # status == "error" (analysed or cached)
        self.seconds = 0.0  # wall time of the scan: set by the caller
        self.verdicts: dict[str, Counter[str]] = {}  # policy id -> verdict -> files
        self.policy_names: dict[str, str] = {}
        self.strictest: Counter[str] = Counter()  # strictest verdict over all policies -> files
        self.families: Counter[str] = Counter()
        self.licenses: Counter[str] = Counter()  # inherited license id -> files
        self.severities: Counter[str] = Counter()  # highest finding severity (or "clean") -> files
        self.error_codes: Counter[str] = Counter()
        self.findings: Counter[str] = Counter()  # finding code -> occurrences

    def add(self, record: AuditRecord, *, cached: bool = False) -> None:
        self.files += 1
        if cached:
            self.cached += 1
        else:
            self.analysed += 1
        if record.status == "error":
            self.errors += 1
            self.error_codes[record.error.code if record.error else "error"] += 1
        for p in record.policies:
            self.verdicts.setdefault(p.policy, Counter())[p.verdict] += 1
            self.policy_names.setdefault(p.policy, p.name)
        if record.policies:
            self.strictest[max((p.verdict for p in record.policies), key=verdict_rank)] += 1
        if record.status != "error":
            self.families[record.fingerprint.family if record.fingerprint else "unknown"] += 1
        ids = inherited_licenses(record)
        for i in ids:
            self.licenses[i] += 1
        if record.licensing is not None and not ids:
            self.licenses["unknown"] += 1
        self.severities[max_severity(record) or "clean"] += 1
        self.findings.update(f.code for f in record.findings)

    def render(self, console: Console) -> None:
        summary(console, self)


def _ranked(c: Counter[str]) -> list[tuple[str, int]]:
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))


def _verdict_order(c: Counter[str]) -> list[tuple[str, int]]:
    known = [(v, c[v]) for v in VERDICTS if c.get(v)]
    return known + sorted((k, n) for k, n in c.items() if k not in VERDICTS)


def summary_dict(tally: Tally) -> dict[str, Any]:
    """The summary as plain JSON data (for ``--format json``/``jsonl``); keys are stable, values counts."""
    return {
        "files": tally.files,
        "analysed": tally.analysed,
        "cached": tally.cached,
        "errors": tally.errors,
        "seconds": round(float(tally.seconds), 3),
        "verdicts": {pid: dict(_verdict_order(c)) for pid, c in sorted(tally.verdicts.items())},
        "strictest_verdict": dict(_verdict_order(tally.strictest)),
        "families": dict(_ranked(tally.families)),
        "licenses": dict(_ranked(tally.licenses)),
        "severities": {s: tally.severities[s] for s in ("clean", *SEVERITIES) if tally.severities.get(s)},
        "error_codes": dict(sorted(tally.error_codes.items())),
        "findings": dict(sorted(tally.findings.items())),
    }


def _counts(items: Iterable[tuple[str, int]], styles: dict[str, str] | None = None, limit: int = 12) -> Text:
    t = Text()
    items = list(items)
    for i, (k, n) in enumerate(items[:limit]):
        if i:
            t.append("  ")
        t.append_text(text(k, (styles or {}).get(k, ""), limit=40))
        t.append(f" {n}", style="bold")
    if len(items) > limit:
        t.append(f"  … {len(items) - limit} more", style="dim")
    return t or Text("–", style="dim")


def summary(console: Console, records_or_counts: Tally | Iterable[AuditRecord], *,
            seconds: float | None = None) -> None:
    """The scan summary: totals, verdicts per policy, families, inherited licenses, severities, errors."""
    tally = records_or_counts
    if not isinstance(tally, Tally):
        tally = Tally()
        for r in records_or_counts:
            tally.add(r)
    if seconds is not None:
        tally.seconds = seconds
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    totals = Text(f"{tally.files} files: {tally.analysed} analysed, {tally.cached} from cache, ")
    totals.append(f"{tally.errors} errors", style="bold red" if tally.errors else "")
    totals.append(f"  in {tally.seconds:.1f} s")
    if tally.seconds > 0 and tally.files:
        totals.append(f" ({tally.files / tally.seconds:.1f} files/s)", style="dim")
    t.add_row("files", totals)
    for pid, c in sorted(tally.verdicts.items()):
        label = Text("policy ") + text(pid, limit=40)
        t.add_row(label, _counts(_verdict_order(c), VERDICT_STYLE))
    if len(tally.verdicts) > 1:
        t.add_row("strictest", _counts(_verdict_order(tally.strictest), VERDICT_STYLE))
    t.add_row("base families", _counts(_ranked(tally.families)))
    if tally.licenses:
        t.add_row("inherited licenses", _counts(_ranked(tally.licenses)))
    sev = [(s, tally.severities[s]) for s in ("clean", *SEVERITIES) if tally.severities.get(s)]
    t.add_row("highest severity", _counts(sev, SEVERITY_STYLE))
    if tally.error_codes:
        t.add_row("errors", _counts(sorted(tally.error_codes.items()), {k: "red" for k in tally.error_codes}))
    console.print(Text("Summary", style="bold"))
    console.print(t)
