"""Rich terminal rendering of an AuditRecord. Reads the record; computes nothing.

Every string that came from the file goes through ``audit.reports.safe.text`` (escaped, never markup).
"""

from __future__ import annotations

from collections import OrderedDict

from audit.reports.safe import text
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from audit.findings import SEVERITY_RANK
from audit.record import AuditRecord, LayerRecord

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "red", "critical": "bold red"}
BAR = 24


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return str(x)
    if x != x:  # NaN
        return "nan"
    return f"{x:.{digits}g}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _hist(h: dict[str, int]) -> Text:
    t = Text()
    for i, (k, v) in enumerate(h.items()):
        if i:
            t.append("  ")
        t.append_text(text(k, limit=24))
        t.append(f"×{v}", style="dim")
    return t


def _shape(layer: LayerRecord) -> str:
    dims = [layer.out_features, layer.in_features]
    if any(d is None for d in dims):
        return "–"
    s = f"{layer.out_features}×{layer.in_features}"
    if layer.kernel:
        s += "×" + "×".join(str(k) for k in layer.kernel)
    elif layer.extra.get("in_includes_kernel"):
        s += " (in·k²)"
    return s


def _overview(r: AuditRecord) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    f = r.file
    t.add_row("file", text(f.path, limit=200))
    t.add_row("size", Text(f"{_size(f.size)}  ({f.size} bytes), header {f.header_bytes} bytes"))
    if r.status == "error":
        return t
    t.add_row("tensors", Text(f"{f.tensor_count}   dtypes: ") + _hist(f.dtypes))
    if r.format:
        fm = r.format
        cov = Text(f"{fm.recognised}/{fm.total} tensors recognised")
        if fm.total:
            cov.append(f" ({100 * fm.recognised / fm.total:.1f} %)")
        t.add_row("format", text(fm.id, "bold") + Text("   ") + cov)
        if len(fm.formats) > 1:
            t.add_row("", Text("mixed: ") + _hist(fm.formats))
        scale = Text(fm.scale_convention)
        if fm.scale_source:
            scale.append("  from ")
            scale.append_text(text(fm.scale_source, limit=80))
        t.add_row("scale rule", scale)
    dom = Text(r.domain, style="bold" if r.domain == "diffusion" else "bold yellow")
    if r.domain_reason:
        dom.append("  ")
        dom.append_text(text(r.domain_reason, "dim", limit=200))
    t.add_row("domain", dom)
    a = r.adapter
    if a and a.layers:
        t.add_row("layers", Text(f"{a.layers}   kinds: ") + _hist(a.kinds))
        t.add_row("rank", _hist(a.rank_histogram))
        t.add_row("alpha", _hist(a.alpha_histogram))
        t.add_row("scale", _hist(a.scale_histogram))
        strength = Text(f"total ‖ΔW‖_F {_num(a.total_strength)}   max σ₁ {_num(a.max_spectral)}")
        if a.base_dependent_layers:
            strength.append(f"   ({a.base_dependent_layers} layer(s) need base weights for the full delta)",
                            style="yellow")
        t.add_row("strength", strength)
    fp = r.fingerprint
    if fp:
        base = text(fp.family, "bold")
        if fp.name:
            base.append("  (")
            base.append_text(text(fp.name, limit=60))
            base.append(")")
        base.append("   confidence ")
        base.append(fp.confidence, style=CONFIDENCE_STYLE.get(fp.confidence, ""))
        t.add_row("base model", base)
        if fp.reason:
            t.add_row("", text(fp.reason, "dim", limit=240))
        if fp.candidates:
            t.add_row("candidates", text(", ".join(c.id for c in fp.candidates), limit=240))
    c = r.claims
    if c:
        meta = Text(c.metadata, style="bold yellow" if c.metadata != "present" else "")
        if c.trainer:
            meta.append("   trainer ")
            meta.append_text(text(c.trainer, "bold", limit=40))
        t.add_row("metadata", meta)
    h = r.hashes
    if h:
        t.add_row("sha256", Text(h.sha256.lower(), style="dim"))
        t.add_row("civitai", Text(f"AutoV1 {h.autov1 or '–'}  AutoV2 {h.autov2}  AutoV3 {(h.autov3 or '–')[:12]}  "
                                  f"CRC32 {h.crc32}", style="dim"))
        t.add_row("blake3", Text(h.blake3.lower(), style="dim"))
    if r.engine:
        t.add_row("engine", Text(f"{r.engine.backend} on {r.engine.device}", style="dim"))
    return t


OUTCOME_STYLE = {"match": "green", "contradict": "red", "lower-bound": "yellow"}
CONFIDENCE_STYLE = {"high": "bold green", "medium": "yellow", "low": "bold red", "none": "dim"}
VERDICT_STYLE = {"agrees": "green", "contradicts": "bold red", "unverifiable": "dim", "unrecognised": "yellow",
                 "match": "green", "match-with-prefix": "yellow", "mismatch": "bold red", "placeholder": "red",
                 "malformed": "red"}


def _evidence(r: AuditRecord, limit: int = 14) -> Table | None:
    fp = r.fingerprint
    if not fp or not fp.evidence:
        return None
    # the winner's evidence, then what rules out the other families
    rows = [e for e in fp.evidence if e.family == fp.family]
    rows += [e for e in fp.evidence if e.family != fp.family and e.outcome == "contradict"]
    t = Table(title="Base-model evidence", title_justify="left")
    for heading in ("family", "signal", "outcome", "observed", "expected", "where (first)"):
        t.add_column(heading, no_wrap=heading != "signal")
    for e in rows[:limit]:
        t.add_row(text(e.family), text(e.what, limit=60), Text(e.outcome, style=OUTCOME_STYLE.get(e.outcome, "")),
                  text(e.observed or "", limit=30), text(e.expected or "", limit=30),
                  text(e.where or "", limit=48, middle=True))
    if len(rows) > limit:
        t.caption = f"{len(rows) - limit} more in the JSON record"
    return t


def _candidates(r: AuditRecord) -> Table | None:
    fp = r.fingerprint
    if not fp or len(fp.candidates) < 2:
        return None
    t = Table(title="Candidates the shapes cannot separate", title_justify="left")
    t.add_column("candidate", no_wrap=True)
    t.add_column("name")
    t.add_column("why it stays possible")
    t.add_column("against")
    for c in fp.candidates:
        t.add_row(text(c.id), text(c.name, limit=40), text("; ".join(c.supports), limit=160),
                  text("; ".join(c.against), "red", limit=100))
    return t


def _claims(r: AuditRecord) -> list[Table]:
    c = r.claims
    if not c:
        return []
    out = []
    if c.base_claims:
        t = Table(title="Base-model claims against the tensors", title_justify="left")
        for heading in ("source", "key", "value", "names", "verdict"):
            t.add_column(heading)
        for cl in c.base_claims:
            names = cl.family + (f" / {cl.variant}" if cl.variant else "") if cl.family else "–"
            t.add_row(text(cl.source), text(cl.key, limit=40), text(cl.value, limit=60), text(names),
                      Text(cl.verdict, style=VERDICT_STYLE.get(cl.verdict, "")))
        out.append(t)
    if c.training:
        t = Table(title="Training metadata (as claimed)", title_justify="left", show_header=False)
        t.add_column(style="bold")
        t.add_column()
        for key, value in c.training.items():
            if isinstance(value, (dict, list)):
                value = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else \
                    ", ".join(str(v) for v in value)
            t.add_row(text(key, limit=40), text(value, limit=120))
        out.append(t)
    if c.triggers:
        t = Table(title="Trigger-word candidates", title_justify="left")
        t.add_column("word")
        t.add_column("sources")
        for tw in c.triggers[:20]:
            t.add_row(text(tw.word, "bold", limit=60), text(", ".join(tw.sources), limit=120))
        out.append(t)
    if c.datasets:
        t = Table(title=f"Dataset folders and top tags ({c.tags_total} distinct tags)", title_justify="left")
        t.add_column("folder")
        t.add_column("images", justify="right")
        t.add_column("repeats", justify="right")
        t.add_column("top tags")
        for d in c.datasets[:12]:
            tags = Text()
            for i, tc in enumerate(d.top_tags[:8]):
                if i:
                    tags.append(", ")
                tags.append_text(text(tc.tag, limit=40))
                tags.append(f" {tc.count}", style="dim")
            t.add_row(text(d.name, limit=40), _num(d.images), _num(d.repeats), tags)
        out.append(t)
    if c.hash_checks:
        t = Table(title="Hashes written in the metadata", title_justify="left")
        for heading in ("field", "value", "checked against", "verdict"):
            t.add_column(heading)
        for hc in c.hash_checks:
            t.add_row(text(hc.field, limit=40), text(hc.value, limit=70), text(hc.against),
                      Text(hc.verdict, style=VERDICT_STYLE.get(hc.verdict, "")))
        out.append(t)
    if c.watchlist:
        t = Table(title="Watchlist hits", title_justify="left")
        for heading in ("name", "matched as", "where", "in"):
            t.add_column(heading)
        for w in c.watchlist[:30]:
            t.add_row(text(w.name, "bold red", limit=60), text(w.alias, limit=60), text(w.where),
                      text(w.value, limit=80))
        out.append(t)
    return out


def _blocks(r: AuditRecord) -> Table | None:
    if not r.blocks:
        return None
    t = Table(title="Where the adapter acts (per block)", title_justify="left", expand=False)
    t.add_column("block")
    t.add_column("layers", justify="right")
    t.add_column("‖ΔW‖_F", justify="right")
    t.add_column("share of energy")
    t.add_column("max σ₁", justify="right")
    for b in r.blocks:
        filled = round(b.energy_share * BAR)
        bar = Text("█" * filled, style="magenta") + Text("·" * (BAR - filled), style="dim")
        bar.append(f" {100 * b.energy_share:5.1f} %")
        t.add_row(text(b.id), str(b.layers), _num(b.strength), bar, _num(b.max_spectral))
    return t


# (heading, justification, cell) for each layer column; a narrow terminal shows only the first seven
_LAYER_COLUMNS = (
    ("layer", "left", lambda l, w: text(l.key, limit=w, middle=True)),
    ("kind", "left", lambda l, w: l.kind),
    ("rank", "right", lambda l, w: _num(l.rank)),
    ("scale", "right", lambda l, w: _num(l.scale)),
    ("‖ΔW‖_F", "right", lambda l, w: _num(l.fro)),
    ("σ₁", "right", lambda l, w: _num(l.spectral)),
    ("eff rk", "right", lambda l, w: _num(l.entropy_rank, 3)),
    ("shape", "right", lambda l, w: _shape(l)),
    ("alpha", "right", lambda l, w: _num(l.alpha)),
    ("stable rk", "right", lambda l, w: _num(l.stable_rank, 3)),
    ("E90/E99", "right", lambda l, w: f"{_num(l.energy_rank_90)}/{_num(l.energy_rank_99)}"),
    ("basis", "left", lambda l, w: l.delta_basis),
)


def _layers(r: AuditRecord, limit: int | None, width: int) -> Table | None:
    if not r.layers:
        return None
    rows = sorted(r.layers, key=lambda l: -(l.fro or 0.0))
    title = "Layers (strongest first)"
    if limit is not None and len(rows) > limit:
        title = f"Strongest {limit} of {len(rows)} layers (--layers for all)"
        rows = rows[:limit]
    wide = width >= 140
    columns = _LAYER_COLUMNS if wide else _LAYER_COLUMNS[:7]
    name_width = 56 if wide else max(24, width - 60)
    t = Table(title=title, title_justify="left")
    for heading, just, _ in columns:
        t.add_column(heading, justify=just, no_wrap=True)
    for l in rows:
        t.add_row(*(cell(l, name_width) for _, _, cell in columns))
    return t


def _findings(r: AuditRecord) -> Table | None:
    if not r.findings:
        return None
    grouped: OrderedDict[tuple[str, str], list] = OrderedDict()
    for f in sorted(r.findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.code)):
        grouped.setdefault((f.severity, f.code), []).append(f)
    t = Table(title="Findings", title_justify="left")
    t.add_column("severity")
    t.add_column("code")
    t.add_column("count", justify="right")
    t.add_column("message")
    t.add_column("where (first)")
    for (sev, code), items in grouped.items():
        first = items[0]
        t.add_row(Text(sev, style=SEVERITY_STYLE[sev]), code, str(len(items)), text(first.message, limit=120),
                  text(first.where or "", limit=80))
    return t


def render(record: AuditRecord, console: Console, *, all_layers: bool = False, top: int = 10) -> None:
    parts: list = [_overview(record)]
    if record.status == "error" and record.error:
        e = record.error
        parts.append(Text.assemble(("error ", "bold red"), (e.code, "bold"), ": ") + text(e.message, limit=400))
    title = text(record.file.name, "bold", limit=120)
    console.print(Panel(Group(*parts), title=title, title_align="left"))
    tables = [_evidence(record), _candidates(record), *_claims(record), _blocks(record),
              _layers(record, None if all_layers else top, console.width), _findings(record)]
    for table in tables:
        if table is not None:
            console.print(table)
    for l in record.layers:
        if l.unknowable:
            console.print(Text("note: ", style="yellow") + text(l.unknowable[0], limit=300))
            break
