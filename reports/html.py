"""The HTML compliance report: one self-contained file for one adapter or a batch.

Reads AuditRecords and lays them out; it evaluates nothing (verdicts, fingerprints, spectra and findings all
come from the records). What it does compute is presentation: colour scales, SVG coordinates, counts.

Safety, for a report that is opened by people the adapter's author may want to attack:

* Jinja2 with autoescape on, and a ``finalize`` hook that passes every printed string through
  :func:`audit.reports.safe.clean` (control characters, bidi overrides and invisible characters become visible
  escapes). Attacker-controlled text (metadata, tags, key names, file names) only ever lands in text nodes or
  quoted ``data-``/``title`` attribute values; never in ``href``, ``src``, ``style``, an event handler, the
  style sheet or the script.
* Links are made only from license URLs in lora-audit's own rules files, and only when they are ``https``.
* A Content-Security-Policy meta element comes first in ``<head>``: ``default-src 'none'`` with the sha256 of
  the one inline style sheet and the one inline script, so even markup that slipped through could neither run
  script nor load anything (no image, font, style sheet, frame or connection).
* No external resource of any kind: CSS, SVG charts and the small table script are inline; the file works
  offline and prints (``<details>`` open for printing).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import math
from collections import Counter
from importlib import resources
from typing import Any, Iterable

import jinja2
from markupsafe import Markup

from audit import __version__
from audit.findings import SEVERITIES, SEVERITY_RANK
from audit.record import VERDICTS, AuditRecord
from audit.reports.license_view import LEVEL_MEANING, VERDICT_SHORT, fact, verdict_rank
from audit.reports.safe import clean
from audit.reports.scan_view import inherited_licenses

VERDICT_LABEL = {"allow": "Allow", "allow-with-conditions": "Allow with conditions", "needs-review": "Needs review",
                 "deny": "Deny", "error": "Error"}
#: policy verdicts as findings: the banners show them, so the findings list leaves them out
POLICY_CODES = ("LA400", "LA401", "LA402")
#: codes shown under "Conflicts" in the license chain (claims against the chain, lineage choice)
LICENSE_CODES = ("LA403", "LA404", "LA405", "LA406", "LA408", "LA409", "LA410", "LA411")

SPECTRUM_FLOOR = -6.0  # log10(σ/σ₁) below this is drawn at the floor
# A batch report keeps each file's section small (500 files stay under 5 MB): fewer rows, plots and points;
# everything cut is in the JSON record (`lora-audit scan --format jsonl`).
FINDINGS_SHOWN = 200  # findings listed one by one (a single file; a batch lists one line per code)
LAYERS_SHOWN, LAYERS_SHOWN_BATCH = 40, 3  # strongest layers listed (a table; a batch: one line)
EVIDENCE_SHOWN, EVIDENCE_SHOWN_BATCH = 60, 5  # fingerprint evidence rows (contradictions first; a batch lists
#                                              contradictions only)
METADATA_SHOWN, METADATA_SHOWN_BATCH = (300, 400), (12, 60)  # raw metadata: (keys, characters per value)
SPECTRA_SHOWN, SPECTRA_SHOWN_BATCH = 4, 1
MAX_BLOCK_INDEX = 200  # heatmap columns at most (a block index past it is drawn in file order)  # strongest layers plotted
SPECTRUM_POINTS, SPECTRUM_POINTS_BATCH = 48, 16  # points per plotted spectrum at most
META_LIMIT = 400  # characters of one training-metadata or ModelSpec value shown
NAME_LIMIT = 96  # characters of a file name or layer key (cut in the middle)


# ---------------------------------------------------------------------------------------------------------
# small formatting helpers (presentation only)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:.{digits}g}"
    return str(x)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)  # pragma: no cover


def _https(url: Any) -> str | None:
    """A license URL from the rules files, kept as a link only when it is plain https."""
    if isinstance(url, str) and url.startswith("https://") and url.isprintable() and " " not in url \
            and '"' not in url and "<" not in url and len(url) < 500:
        return url
    return None


def _histogram(h: dict | None) -> str:
    if not h:
        return "—"
    items = sorted(h.items(), key=lambda kv: (-kv[1], str(kv[0])))
    shown = ", ".join(f"{k} × {v}" for k, v in items[:6])
    return shown + (f", … ({len(items) - 6} more)" if len(items) > 6 else "")


def _mix(t: float) -> str:
    """Sequential colour scale, light (0) to dark violet (1)."""
    lo, hi = (243, 240, 255), (59, 7, 100)
    t = min(1.0, max(0.0, t))
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(lo, hi))


# ---------------------------------------------------------------------------------------------------------
# charts


def heatmap(blocks) -> dict | None:
    """Rows = block groups (text encoders, down/mid/up, double/single…), cells = block index, shade = strength
    relative to the strongest block of the file."""
    if not blocks:
        return None
    rows: dict[str, list] = {}
    for b in blocks:
        rows.setdefault(b.group or "?", []).append(b)
    peak = max((b.strength for b in blocks if isinstance(b.strength, (int, float)) and math.isfinite(b.strength)),
               default=0.0) or 1.0
    cell, gap, label_w, top = 18, 2, 118, 16
    # a block sits at its index (an adapter that skips blocks leaves gaps); a group without indices in order
    columns = {group: [b.index if isinstance(b.index, int) and 0 <= b.index < MAX_BLOCK_INDEX else None
                       for b in items] for group, items in rows.items()}
    for group, items in rows.items():
        if any(c is None for c in columns[group]) or len(set(columns[group])) != len(items):
            columns[group] = list(range(len(items)))
    width_cells = max(max(c) + 1 for c in columns.values())
    out_rows = []
    for r, (group, items) in enumerate(rows.items()):
        y = top + r * (cell + gap)
        cells = []
        for c, b in zip(columns[group], items):
            s = b.strength if isinstance(b.strength, (int, float)) and math.isfinite(b.strength) else 0.0
            t = math.sqrt(s / peak) if peak > 0 and s > 0 else 0.0
            share = b.energy_share if isinstance(b.energy_share, (int, float)) and math.isfinite(b.energy_share) \
                else None
            cells.append({
                "x": label_w + c * (cell + gap), "y": y, "fill": _mix(t),
                "title": f"{b.id}: {_num(s)}" + (f", {share * 100:.1f}%" if share else ""),
            })
        out_rows.append({"label": group, "y": y + cell - 5, "cells": cells})
    height = top + len(rows) * (cell + gap) + 4
    return {"width": max(label_w + width_cells * (cell + gap) + 4, 470), "height": height, "cell": cell,
            "rows": out_rows, "label_w": label_w,
            "legend": [{"x": label_w + i * 52, "fill": _mix(i / 4), "label": f"{(i / 4) ** 2 * 100:.0f}%"}
                       for i in range(5)],
            "peak": _num(peak)}


def spectrum_plot(layer, points: int = SPECTRUM_POINTS) -> dict | None:
    sv = [v for v in (layer.spectrum or []) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not sv or sv[0] <= 0:
        return None
    n = len(sv)
    idx = list(range(n)) if n <= points else sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    w, h, left, right, top, bottom = 300, 130, 38, 8, 8, 22  # pixels: integer coordinates are enough
    low = SPECTRUM_FLOOR
    ys = []
    for i in idx:
        r = sv[i] / sv[0]  # may underflow to 0 (σ₁ = 1e150, σᵢ = 1e-200)
        ys.append(max(low, math.log10(r)) if r > 0 and math.isfinite(r) else low)
    floor = min(ys)
    low = max(SPECTRUM_FLOOR, math.floor(floor)) if floor < 0 else -1.0
    pw, ph = w - left - right, h - top - bottom

    def px(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def py(v: float) -> float:
        return top + ph * (v / low)

    points = " ".join(f"{px(i):.0f},{py(y):.0f}" for i, y in zip(idx, ys))
    ticks = [{"y": round(py(-k)), "label": "1" if k == 0 else f"1e-{k}"} for k in range(0, int(-low) + 1)]
    return {"w": w, "h": h, "left": left, "right": w - right, "top": top, "bottom": h - bottom,
            "points": points, "ticks": ticks, "n": n, "single": n == 1,
            "x_last": f"{n}", "cx": round(px(0)), "cy": round(py(0))}


# ---------------------------------------------------------------------------------------------------------
# the view of one record


def _reason(r) -> dict:
    return {"message": r.message, "remediation": r.remediation, "license": r.license, "clause": r.clause,
            "url": _https(r.url), "lineage": r.lineage, "action": r.action}


def _policy(p) -> dict:
    return {
        "id": p.policy, "name": p.name, "verdict": p.verdict, "label": VERDICT_LABEL.get(p.verdict, p.verdict),
        "reasons": [_reason(r) for r in p.reasons], "conditions": [_reason(r) for r in p.conditions],
        "notes": [_reason(r) for r in p.notes],
        "by_lineage": sorted(p.by_lineage.items()) if len(set(p.by_lineage.values())) > 1 else [],
        "context": [(k, fact(v)) for k, v in sorted(p.context.items())],
    }


def _worst(policies) -> str | None:
    return max((p.verdict for p in policies), key=verdict_rank) if policies else None


def _family(rec: AuditRecord) -> str:
    fp = rec.fingerprint
    return fp.family if fp is not None else "unknown"


def _kinds(rec: AuditRecord) -> str:
    if rec.adapter is None or not rec.adapter.kinds:
        return "—"
    return ", ".join(k for k, _ in sorted(rec.adapter.kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def _main_rank(rec: AuditRecord) -> float:
    """The most common rank, for sorting (-1 when there is none)."""
    if rec.adapter is None or not rec.adapter.rank_histogram:
        return -1
    key = max(rec.adapter.rank_histogram, key=lambda k: (rec.adapter.rank_histogram[k], str(k)))
    try:
        return float(key)
    except (TypeError, ValueError):
        return -1


def _ranks(rec: AuditRecord) -> str:
    if rec.adapter is None or not rec.adapter.rank_histogram:
        return "—"
    keys = sorted(rec.adapter.rank_histogram, key=lambda k: (-rec.adapter.rank_histogram[k], str(k)))
    return ", ".join(str(k) for k in keys[:3]) + ("…" if len(keys) > 3 else "")


def _probe(rec: AuditRecord, image: bytes | None) -> dict | None:
    if not rec.probe:
        return None
    from audit.reports.probe_view import arm_rows

    p = rec.probe
    view = {"verdict": p.get("verdict"), "mode": p.get("mode"), "primary": p.get("primary_arm"),
            "embedder": p.get("embedder"), "reasons": p.get("reasons", []), "warnings": p.get("warnings", []),
            "rows": arm_rows(p.get("arms", {})), "protocol": p.get("protocol", {}), "inputs": p.get("inputs", {}), "image": None}
    if image is not None and image.startswith(b"\xff\xd8\xff"):  # our own contact sheet, as JPEG
        view["image"] = Markup("data:image/jpeg;base64," + base64.b64encode(image).decode("ascii"))
    return view


def file_view(rec: AuditRecord, index: int, *, batch: bool, probe_image: bytes | None = None) -> dict:
    f = rec.file
    name = clean(f.name if f is not None else "?", NAME_LIMIT, middle=True)
    view: dict[str, Any] = {
        "anchor": f"f{index}", "index": index, "name": name,
        "path": clean(f.path, 240, middle=True) if f is not None else "",
        "size": _size(f.size if f is not None else None), "status": rec.status,
        "error": rec.error, "domain": rec.domain, "domain_reason": rec.domain_reason,
        "family": _family(rec), "kinds": _kinds(rec), "ranks": _ranks(rec), "rank_sort": _main_rank(rec),
        "licenses": inherited_licenses(rec), "worst": _worst(rec.policies) if rec.status == "ok" else "error",
        "policies": [_policy(p) for p in rec.policies],
    }
    view["by_policy"] = {p["id"]: p for p in view["policies"]}
    sev = Counter(fd.severity for fd in rec.findings if fd.code not in POLICY_CODES)
    view["severity_counts"] = [(s, sev[s]) for s in reversed(SEVERITIES) if sev.get(s)]
    view["errors"] = sev.get("error", 0) + sev.get("critical", 0)
    view["warnings"] = sev.get("warning", 0)
    view["findings"] = sorted((fd for fd in rec.findings if fd.code not in POLICY_CODES),
                              key=lambda fd: (-SEVERITY_RANK.get(fd.severity, 0), fd.code))
    view["conflicts"] = [fd for fd in view["findings"] if fd.code in LICENSE_CODES]
    groups: dict[str, dict] = {}
    for fd in view["findings"]:  # one line per code: the first message and where, and how many
        g = groups.setdefault(fd.code, {"code": fd.code, "severity": fd.severity, "message": fd.message,
                                        "where": fd.where, "count": 0})
        g["count"] += 1
    view["finding_groups"] = list(groups.values())
    view["findings_cut"] = max(0, len(view["findings"]) - FINDINGS_SHOWN)
    view["findings"] = view["findings"][:FINDINGS_SHOWN]
    view["format"] = rec.format
    view["adapter"] = rec.adapter
    if rec.adapter is not None:
        a = rec.adapter
        view["rank_hist"] = _histogram(a.rank_histogram)
        view["alpha_hist"] = _histogram(a.alpha_histogram)
        view["scale_hist"] = _histogram(a.scale_histogram)
    view["licensing"] = _licensing(rec)
    view["fingerprint"] = _fingerprint(rec, EVIDENCE_SHOWN_BATCH if batch else EVIDENCE_SHOWN, batch=batch)
    view["heatmap"] = heatmap(rec.blocks)
    view["blocks"] = sorted(rec.blocks, key=lambda b: -(b.strength or 0.0))
    layers = sorted(rec.layers, key=lambda la: -(la.fro if la.fro is not None and math.isfinite(la.fro) else -1))
    shown = LAYERS_SHOWN_BATCH if batch else LAYERS_SHOWN
    view["layers_cut"] = max(0, len(layers) - shown)
    layers = layers[:shown]
    view["layers"] = [{
        "key": clean(la.key, NAME_LIMIT, middle=True), "kind": la.kind, "rank": la.rank,
        "alpha": _num(la.alpha), "scale": _num(la.scale), "fro": _num(la.fro), "spectral": _num(la.spectral),
        "stable_rank": _num(la.stable_rank, 3), "entropy_rank": _num(la.entropy_rank, 3),
        "shape": f"{la.out_features or '?'}×{la.in_features or '?'}",
    } for la in layers]
    view["layers_omitted"] = rec.layers_omitted
    plots = []
    for la in sorted((la for la in rec.layers if la.spectrum and la.spectral),
                     key=lambda la: -la.spectral)[:SPECTRA_SHOWN_BATCH if batch else SPECTRA_SHOWN]:
        plot = spectrum_plot(la, SPECTRUM_POINTS_BATCH if batch else SPECTRUM_POINTS)
        if plot is not None:
            plot.update(key=clean(la.key, 64, middle=True), sigma1=_num(la.spectral),
                        stable_rank=_num(la.stable_rank, 3), entropy_rank=_num(la.entropy_rank, 3))
            plots.append(plot)
    view["spectra"] = plots
    view["claims"] = _claims(rec, batch=batch)
    view["hashes"] = rec.hashes
    view["hash_checks"] = rec.claims.hash_checks if rec.claims is not None else []
    meta = (f.metadata if f is not None else None) or {}
    keys, limit = METADATA_SHOWN_BATCH if batch else METADATA_SHOWN
    if batch:  # the ModelSpec keys are shown, parsed, under Training metadata
        meta = {k: v for k, v in meta.items() if not k.startswith("modelspec.")}
    view["metadata"] = [(clean(k, 120, middle=True), clean(v, limit)) for k, v in sorted(meta.items())[:keys]]
    view["metadata_more"] = max(0, len(meta) - keys)
    view["engine"] = rec.engine
    view["probe"] = _probe(rec, probe_image)
    return view


def _licensing(rec: AuditRecord) -> dict | None:
    lic = rec.licensing
    if lic is None:
        return None
    lineages = []
    for lineage in lic.lineages:
        lineages.append({
            "id": lineage.id, "name": lineage.name, "family": lineage.family, "note": lineage.note,
            "chain": [{"role": link.role, "id": link.license.id, "name": link.license.name,
                       "version": link.license.version, "spdx": link.license.spdx,
                       "published": link.license.published, "url": _https(link.license.url),
                       "level": link.license.level, "level_meaning": LEVEL_MEANING.get(link.license.level, ""),
                       "via": link.via} for link in lineage.chain],
        })
    return {"basis": lic.basis, "basis_detail": lic.basis_detail, "asserted": lic.asserted, "lineages": lineages,
            "declared": lic.declared, "civitai": [(k, fact(v)) for k, v in sorted((lic.civitai or {}).items())],
            "disclaimer": lic.disclaimer}


def _fingerprint(rec: AuditRecord, shown: int, *, batch: bool) -> dict | None:
    fp = rec.fingerprint
    if fp is None:
        return None
    scores = sorted(fp.scores.items(), key=lambda kv: (-(kv[1] if isinstance(kv[1], (int, float))
                                                         and math.isfinite(kv[1]) else -math.inf), kv[0]))
    scores = scores[:4 if batch else 8]
    evidence = sorted(fp.evidence, key=lambda e: (e.outcome != "contradict", e.family, e.signal))
    if batch:
        evidence = [e for e in evidence if e.outcome == "contradict"]
    return {"family": fp.family, "name": fp.name, "confidence": fp.confidence, "reason": fp.reason,
            "partial": fp.partial, "candidates": fp.candidates,
            "evidence": evidence[:shown], "evidence_more": max(0, len(fp.evidence) - min(shown, len(evidence))),
            "scores": [(k, _num(v, 3)) for k, v in scores]}


def _claims(rec: AuditRecord, *, batch: bool) -> dict | None:
    cl = rec.claims
    if cl is None:
        return None
    tags = 10 if batch else 25
    limit = 80 if batch else META_LIMIT
    training = []
    for k, v in sorted(cl.training.items()):
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in sorted(v.items(), key=lambda kv: str(kv[0])))
        training.append((k, clean(v if isinstance(v, str) else _num(v), limit)))
    return {
        "metadata": cl.metadata, "trainer": cl.trainer, "training": training,
        "modelspec": [(k, clean(v, limit)) for k, v in sorted(cl.modelspec.items())],
        "base_claims": cl.base_claims, "triggers": cl.triggers[:40], "triggers_more": max(0, len(cl.triggers) - 40),
        "datasets": [{"name": clean(d.name, 120, middle=True), "images": d.images, "repeats": d.repeats,
                      "distinct": d.distinct_tags,
                      "tags": [(clean(t.tag, 80), t.count) for t in d.top_tags[:tags]]} for d in cl.datasets[:20]],
        "datasets_more": max(0, len(cl.datasets) - 20), "tags_total": cl.tags_total,
        "sidecars": cl.sidecars, "watchlist": cl.watchlist, "licenses": cl.licenses,
    }


# ---------------------------------------------------------------------------------------------------------
# the batch view


def _catalogue(views: list[dict], field: str, prefix: str) -> list[dict]:
    """A batch lists each distinct reason (``field`` "reasons") or condition ("conditions") once, in the
    overview; the files' banners refer to it by number. Sets ``ref`` on each item of every view."""
    catalogue: dict[tuple, dict] = {}
    for v in views:
        for p in v["policies"]:
            for c in p[field]:
                key = (c["message"], c["remediation"], c["license"], c["clause"], c["url"], c["action"])
                entry = catalogue.get(key)
                if entry is None:
                    entry = catalogue[key] = {**c, "ref": f"{prefix}{len(catalogue) + 1}", "files": set(),
                                              "policies": set()}
                entry["files"].add(v["index"])
                entry["policies"].add(p["id"])
                c["ref"] = entry["ref"]
    out = []
    for entry in catalogue.values():
        entry["files"], entry["policies"] = len(entry["files"]), sorted(entry["policies"])
        out.append(entry)
    return out


def _contexts(views: list[dict]) -> list[tuple[str, list]]:
    """The deployer facts each policy was evaluated with (the same for every file of a run)."""
    seen: dict[str, list] = {}
    for v in views:
        for p in v["policies"]:
            seen.setdefault(p["id"], p["context"])
    return list(seen.items())


def batch_view(views: list[dict], policy_ids: list[str]) -> dict:
    per_policy = []
    for pid in policy_ids:
        counts = Counter()
        for v in views:
            verdict = next((p["verdict"] for p in v["policies"] if p["id"] == pid), None)
            counts["error" if v["status"] == "error" else (verdict or "not evaluated")] += 1
        per_policy.append({"id": pid, "counts": [(k, counts[k]) for k in (*VERDICTS, "error", "not evaluated")
                                                  if counts.get(k)]})
    families = Counter(v["family"] for v in views)
    licenses = Counter(lic for v in views for lic in (v["licenses"] or ["(none derived)"]))
    urls: dict[str, str | None] = {}
    for v in views:
        for lineage in (v["licensing"] or {}).get("lineages", []):
            for link in lineage["chain"]:
                urls.setdefault(link["id"], link["url"])
    worst = Counter(v["worst"] or "not evaluated" for v in views)
    return {"per_policy": per_policy, "families": families.most_common(),
            "licenses": [(k, n, urls.get(k)) for k, n in licenses.most_common()],
            "worst": [(k, worst[k]) for k in (*VERDICTS, "error", "not evaluated") if worst.get(k)],
            "reasons": _catalogue(views, "reasons", "r"), "conditions": _catalogue(views, "conditions", "c"),
            "notes": _catalogue(views, "notes", "n"),
            "contexts": _contexts(views)}


# ---------------------------------------------------------------------------------------------------------
# rendering


def _asset(name: str) -> str:
    return resources.files("audit.reports").joinpath("templates", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _finalize(value: Any) -> Any:
    """Every value a template prints: None as empty, our own markup as is, every other string cleaned."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return clean(value, None)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: _asset(name)),
        autoescape=True, finalize=_finalize, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["clip"] = lambda v, n=NAME_LIMIT: "" if v is None else clean(v, n, middle=True)
    env.globals["verdict_label"] = lambda v: VERDICT_LABEL.get(v, v)
    env.globals["verdict_short"] = lambda v: VERDICT_SHORT.get(v, v)
    env.globals["verdict_rank"] = verdict_rank
    return env


def render(records: Iterable[AuditRecord], *, title: str | None = None, generated: str | None = None) -> str:
    """The report for ``records`` (one adapter or many) as one HTML document."""
    records = list(records)
    batch = len(records) != 1
    return render_views([file_view(r, i, batch=batch) for i, r in enumerate(records)], title=title,
                        generated=generated)


def render_views(views: list[dict], *, title: str | None = None, generated: str | None = None) -> str:
    """The report from views made by :func:`file_view` (``batch`` set for every view when there are several):
    a long scan builds each view as its record arrives and keeps no record."""
    batch = len(views) != 1
    policy_ids: list[str] = []
    for v in views:
        for p in v["policies"]:
            if p["id"] not in policy_ids:
                policy_ids.append(p["id"])
    css, script = _asset("report.css"), _asset("report.js")
    images = any(v.get("probe") and v["probe"]["image"] for v in views)  # a probe's contact sheet, inline
    csp = ("default-src 'none'; style-src " + _csp_hash(css) + "; script-src " + _csp_hash(script)
           + ("; img-src data:" if images else "; img-src 'none'") + "; font-src 'none'; connect-src 'none'; media-src 'none'; object-src 'none'; "
           "frame-src 'none'; child-src 'none'; worker-src 'none'; manifest-src 'none'; base-uri 'none'; "
           "form-action 'none'")
    disclaimer = next((v["licensing"]["disclaimer"] for v in views if v["licensing"] is not None),
                      "Not legal advice: a summary of license texts to help a human review, citing each text.")
    if title is None:
        title = "lora-audit report: " + (views[0]["name"] if not batch else f"{len(views)} files")
    elif not title.startswith("lora-audit report"):
        title = "lora-audit report: " + title
    return _environment().get_template("report.html.j2").render(
        title=title, views=views, batch=batch, policy_ids=policy_ids,
        summary=batch_view(views, policy_ids) if batch else None,
        css=Markup(css), script=Markup(script), csp=csp, version=__version__,
        generated=generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        disclaimer=disclaimer, verdicts=list(VERDICTS), severities=list(reversed(SEVERITIES)),
    )
