"""Rich terminal rendering of an AuditRecord. Reads the record; computes nothing.

Every string that came from the file goes through ``audit.reports.safe.text`` (escaped, never markup).
"""

from __future__ import annotations

from collections import OrderedDict

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from audit.findings import SEVERITY_RANK
from audit.record import AuditRecord, LayerRecord
from audit.reports.safe import text

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
    if r.engine:
        t.add_row("engine", Text(f"{r.engine.backend} on {r.engine.device}", style="dim"))
    return t


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
    for table in (_blocks(record), _layers(record, None if all_layers else top, console.width), _findings(record)):
        if table is not None:
            console.print(table)
    for l in record.layers:
        if l.unknowable:
            console.print(Text("note: ", style="yellow") + text(l.unknowable[0], limit=300))
            break
