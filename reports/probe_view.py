"""Terminal view of a probe result (``lora-audit probe``). Reads the result; computes nothing. Every string that
came from a file (trigger words, folder names) goes through ``audit.reports.safe.text``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from audit.reports.safe import text

VERDICT_STYLE = {"captured": "bold red", "shifts_style_nonspecifically": "bold yellow", "inconclusive": "yellow",
                 "not_detected": "bold green"}


def _ci(ci) -> str:
    return f"{ci[0]:+.4f} … {ci[1]:+.4f}"


def arm_rows(arms: dict[str, Any]) -> list[dict[str, str]]:
    """One row per trigger arm (``ProbeResult.arms``): the numbers both the terminal and the HTML report show."""
    rows = []
    for arm, res in arms.items():
        e, p, c = res["effect"], res.get("panel"), res.get("consistency")
        rows.append({
            "arm": arm, "pairs": f"{e['n_pairs']} ({e['n_clusters']} clusters)",
            "delta": f"{e['delta_mean']:+.4f}", "ci": _ci(e["delta_ci95"]), "p": f"{e['p_signflip']:.3g}",
            "dz": f"{e['cohens_dz']:.2f}",
            "margin": f"{p['margin']:+.4f} ({_ci(p['margin_ci95'])})" if p else "—",
            "panel": f"rank {p['panel_rank']}, p {p['panel_p']:.3g}" if p else "—",
            "attribution": f"{p['attribution_rate_base']:.2f} → {p['attribution_rate_lora']:.2f}" if p else "—",
            "consistency": f"{c['base']:.3f} → {c['lora']:.3f} (p {c['p']:.3g})" if c else "—",
            "abs": f"{e['base_sim']:.3f} → {e['lora_sim']:.3f}",
            "controls": ", ".join(f"{k} {v:+.4f}" for k, v in (p or {}).get("per_control_delta", {}).items()),
        })
    return rows


def render(result: Any, console: Console) -> None:
    console.print(text(f"probe ({result.mode}, primary arm: {result.primary_arm}, embedder {result.embedder})",
                       "bold"))
    console.print(text(f"verdict: {result.verdict}", VERDICT_STYLE.get(result.verdict, "bold")))
    for reason in result.reasons:
        console.print(text(f"  {reason}", limit=400))
    table = Table(show_header=True, header_style="bold", expand=False)
    for col in ("arm", "pairs", "Δ target", "95% CI", "p", "d_z", "margin over best control", "panel",
                "attribution base → LoRA"):
        table.add_column(col)
    for row in arm_rows(result.arms):
        table.add_row(*(text(row[k], limit=80) for k in ("arm", "pairs", "delta", "ci", "p", "dz", "margin",
                                                          "panel", "attribution")))
    console.print(table)
    for w in result.warnings:
        console.print(text(f"warning: {w}", "yellow", limit=400))
    for name, path in result.artifacts.items():
        console.print(text(f"{name.replace('_', ' ')}: {path}", limit=400))
