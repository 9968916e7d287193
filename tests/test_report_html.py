"""The HTML report's layout, against hand computations and the records it is built from.

The hostile-input and browser checks are in test_report_browser.py; this file checks that what the report shows
is what the records say: chart geometry, counts, the condition catalogue of a batch, and the sections.
"""

from __future__ import annotations

import html as htmllib
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from audit import corpus
from audit.record import AuditRecord, BlockRecord, FileInfo, PolicyVerdict, Reason, from_dict
from audit.reports import html

from tests import browser

CLI = [sys.executable, "-c", "import cli; cli.main()"]


def _record(name: str, policies=()) -> AuditRecord:
    return AuditRecord(file=FileInfo(path=name, name=name, size=1234), policies=list(policies))


def test_heatmap_shades_by_square_root_of_relative_strength():
    blocks = [BlockRecord("te", "te", None, 4, 1.0, 0.2, 0.5), BlockRecord("up.0", "up", 0, 4, 4.0, 0.8, 1.0),
              BlockRecord("up.1", "up", 1, 4, 0.0, 0.0, 0.0)]
    hm = html.heatmap(blocks)
    assert [r["label"] for r in hm["rows"]] == ["te", "up"]  # groups in order of appearance
    te, up = hm["rows"]
    # shade t = sqrt(strength / strongest): 1/4 -> 0.5, 4/4 -> 1, 0 -> 0
    assert te["cells"][0]["fill"] == html._mix(0.5)
    assert [c["fill"] for c in up["cells"]] == [html._mix(1.0), html._mix(0.0)]
    assert html._mix(0.0) == "#f3f0ff" and html._mix(1.0) == "#3b0764"
    assert up["cells"][1]["x"] - up["cells"][0]["x"] == 20  # 18-px cells, 2-px gaps
    assert up["cells"][0]["title"] == "up.0: 4, 80.0%"
    assert html.heatmap([]) is None


def test_spectrum_plot_geometry_by_hand():
    p = html.spectrum_plot(SimpleNamespace(spectrum=[2.0, 0.2, 0.02]))
    # log10(σ/σ₁) = 0, -1, -2; the axis runs from 0 (top, y=8) to -2 (bottom, y=108); x from 38 to 292
    assert p["points"] == "38,8 165,58 292,108"
    assert [t["label"] for t in p["ticks"]] == ["1", "1e-1", "1e-2"]
    assert [t["y"] for t in p["ticks"]] == [8, 58, 108]
    # a long spectrum is cut to `points` samples, first and last kept; zeros sit on the floor (1e-6)
    q = html.spectrum_plot(SimpleNamespace(spectrum=[1.0] * 99 + [0.0]), points=10)
    pts = q["points"].split()
    assert len(pts) == 10 and pts[0] == "38,8" and pts[-1].startswith("292,")
    assert q["ticks"][-1]["label"] == "1e-6"
    assert html.spectrum_plot(SimpleNamespace(spectrum=[0.0, 0.0])) is None


def _policy(pid: str, verdict: str, conditions=()) -> PolicyVerdict:
    return PolicyVerdict(policy=pid, name=pid.title(), verdict=verdict, conditions=list(conditions))


def test_batch_counts_and_condition_catalogue():
    keep = Reason(rule="obligations", action="condition", message="Keep the notices.", license="lic-a",
                  clause="§4", url="https://example.org/lic-a")
    other = Reason(rule="obligations", action="condition", message="Show a notice.", license="lic-b", clause="§2",
                   url="javascript:alert(1)")
    records = [_record("a.safetensors", [_policy("p1", "allow-with-conditions", [keep]), _policy("p2", "deny")]),
               _record("b.safetensors", [_policy("p1", "allow-with-conditions", [keep, other]),
                                         _policy("p2", "allow")]),
               _record("c.safetensors", [_policy("p1", "allow"), _policy("p2", "needs-review")])]
    views = [html.file_view(r, i, batch=True) for i, r in enumerate(records)]
    summary = html.batch_view(views, ["p1", "p2"])
    assert summary["per_policy"][0]["counts"] == [("allow", 1), ("allow-with-conditions", 2)]
    assert summary["per_policy"][1]["counts"] == [("allow", 1), ("needs-review", 1), ("deny", 1)]
    # strictest verdict per file: cond., deny, review
    assert summary["worst"] == [("allow-with-conditions", 1), ("needs-review", 1), ("deny", 1)]
    cat = summary["conditions"]
    assert [(c["ref"], c["message"], c["files"]) for c in cat] == [("c1", "Keep the notices.", 2),
                                                                  ("c2", "Show a notice.", 1)]
    assert views[1]["policies"][0]["conditions"][1]["ref"] == "c2"
    assert cat[1]["url"] is None  # only https license URLs become links
    page = html.render(records)
    assert page.count('id="c1"') == 1 and page.count('href="#c1"') == 2
    assert "javascript:" not in page
    assert 'data-verdicts="allow-with-conditions deny"' in page


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> tuple[str, AuditRecord]:
    """`lora-audit demo` on a fresh folder: its HTML report and its JSON record."""
    out = tmp_path_factory.mktemp("demo")
    r = subprocess.run([*CLI, "demo", "--out-dir", str(out), "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"HTML report written to {out / 'demo-sd15-kohya.html'}" in r.stdout
    text = (out / "demo-sd15-kohya.html").read_text(encoding="utf-8")
    record = from_dict(json.loads((out / "demo-sd15-kohya.json").read_text()))
    return text, record


def test_demo_report_shows_what_the_record_says(demo_report):
    text, record = demo_report
    for heading in ("Policy verdicts", "License chain", "Base-model fingerprint", "Where the LoRA acts",
                    "Singular spectra of the strongest layers", "Rank and alpha", "Findings", "Training metadata",
                    "Hashes"):
        assert f"<h3>{heading}</h3>" in text, heading
    assert record.policies, "demo evaluates every shipped policy"
    for p in record.policies:
        assert f'<section class="banner verdict-{p.verdict}">' in text
        assert f"({p.policy})" in text
    assert record.hashes is not None and record.hashes.sha256 in text and record.hashes.autov3 in text
    plain = htmllib.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "Not legal advice" in plain
    for lineage in record.licensing.lineages:
        for link in lineage.chain:
            assert link.license.name in plain and link.license.id in plain
    # one heatmap cell per block, four spectra plotted (the strongest layers by σ₁)
    assert text.count("<rect x=") == len(record.blocks) + 5  # + the 5 legend swatches
    assert text.count("<polyline") == min(4, sum(1 for la in record.layers if la.spectrum))
    strongest = max(record.layers, key=lambda la: la.spectral)
    assert html._num(strongest.spectral) in plain
    # the rank/alpha table states the histogram of every layer
    assert f"{next(iter(record.adapter.rank_histogram))} × {record.adapter.layers}" in plain


def test_report_command_and_scan_html_write_the_same_report(tmp_path):
    files = []
    for i, family in enumerate(("sd1", "sdxl")):
        path = tmp_path / "in" / f"{family}.safetensors"
        path.parent.mkdir(exist_ok=True)
        corpus.write(path, corpus.build(family, "kohya", rank=2, targets="attn", text_encoders=False,
                                        max_modules=4, seed=i))
        files.append(path)
    out1, out2 = tmp_path / "r1.html", tmp_path / "r2.html"
    r1 = subprocess.run([*CLI, "report", str(tmp_path / "in"), "-o", str(out1), "--no-cache", "--no-progress",
                         "--policy", "internal-research"], capture_output=True, text=True)
    assert r1.returncode in (0, 1), r1.stderr
    r2 = subprocess.run([*CLI, "scan", str(tmp_path / "in"), "--format", "jsonl", "-o", str(tmp_path / "s.jsonl"),
                         "--html", str(out2), "--no-cache", "--no-progress", "--policy", "internal-research"],
                        capture_output=True, text=True)
    assert r2.returncode == r1.returncode, r2.stderr

    def body(p: Path) -> str:  # the generation time aside
        return re.sub(r"Generated [^<]* by", "", p.read_text(encoding="utf-8"))

    assert body(out1) == body(out2)
    text = body(out1)
    assert "<h2>Overview: 2 files</h2>" in text and text.count('<details class="file"') == 2
    assert len(re.findall(r"<tr data-index=", text)) == 2


def test_report_of_nothing_is_a_usage_error(tmp_path):
    r = subprocess.run([*CLI, "report", str(tmp_path), "-o", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert r.returncode == 3 and not (tmp_path / "r.html").exists()


def test_fragment_opens_the_file_section_in_a_browser(tmp_path):
    """A link to a file's section (the summary table's links, or a URL with #fN) opens its <details>."""
    chromium = browser.browser_or_skip()
    assert chromium
    records = [_record("a.safetensors", [_policy("p1", "allow")]), _record("b.safetensors", [_policy("p1", "deny")])]
    page = tmp_path / "r.html"
    page.write_text(html.render(records), encoding="utf-8")
    r = browser._run(["--virtual-time-budget=2000", "--dump-dom", page.resolve().as_uri() + "#f1"],
                     browser.TIMEOUT_S)
    dom = r.stdout.decode()
    assert 'data-report-ready="1"' in dom
    assert re.search(r'<details class="file" id="f1" open=""', dom)
    assert not re.search(r'<details class="file" id="f0" open', dom)


@pytest.mark.parametrize("value,shown", [(float("nan"), "NaN"), (math.inf, "∞"), (1234, "1,234"), (0.123456, "0.1235"),
                                         (None, "—")])
def test_number_formatting(value, shown):
    assert html._num(value) == shown


def test_odd_records_render_with_their_counts():
    """Values a crafted or broken file can produce: an underflowing spectrum ratio, NaN or missing strengths and
    shares, missing evidence fields and scores, more findings than are listed."""
    from audit.findings import Finding
    from audit.record import Evidence, Fingerprint, LayerRecord

    layer = LayerRecord(key="unet:odd", component="unet", module="odd", block="up.0", kind="lora", format="kohya",
                        tensors=[], out_features=4, in_features=4, kernel=[], rank=4, alpha=None, scale=1.0,
                        scale_rule="none", delta_basis="exact", fro=1e150, spectral=1e150,
                        spectrum=[1e150, 1e-200, 0.0])
    rec = _record("odd.safetensors", [_policy("p1", "deny")])
    rec.layers = [layer]
    rec.blocks = [BlockRecord("up.0", "up", 0, 1, float("nan"), None, 1e150),
                  BlockRecord("up.3", "up", 3, 1, 2.0, 0.5, 1.0)]
    rec.fingerprint = Fingerprint(family="sd1", evidence=[Evidence("sd1", "s", "module", "contradict", "what")],
                                  scores={"sd1": None, "sdxl": 1.0})
    rec.findings = [Finding("LA201", "error", f"bad {i}") for i in range(250)] + \
                   [Finding("LA154", "warning", f"odd {i}") for i in range(50)]
    plot = html.spectrum_plot(layer)
    assert plot["points"].split()[1:] == ["165,108", "292,108"]  # both on the 1e-6 floor
    hm = html.heatmap(rec.blocks)
    assert [c["x"] for c in hm["rows"][0]["cells"]] == [118, 178]  # at their indices 0 and 3
    assert hm["rows"][0]["cells"][0]["fill"] == html._mix(0.0)
    single = html.render([rec])
    assert "None" not in re.sub(r"<[^>]+>", " ", single)
    assert single.count('<span class="sev sev-error">LA201</span>') == html.FINDINGS_SHOWN
    assert "100 more findings in the JSON record." in single
    batch = html.render([rec, _record("b.safetensors")])
    assert '<td class="num" data-sort="250">250</td><td class="num" data-sort="50">50</td>' in batch
    assert "LA201</span> ×250" in batch


def test_scan_html_beside_the_table_and_bad_output_paths(tmp_path):
    src = tmp_path / "in" / "a.safetensors"
    src.parent.mkdir()
    corpus.write(src, corpus.build("sd1", "kohya", rank=2, targets="attn", text_encoders=False, max_modules=4))
    out = tmp_path / "a.html"
    r = subprocess.run([*CLI, "scan", str(src.parent), "--html", str(out), "--no-cache", "--no-progress",
                        "--policy", "commercial-hosted-service"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # SD1.5: allow-with-conditions, no finding at error level
    assert "cond." in r.stdout and f"HTML report written to {out}" in r.stderr
    text = out.read_text(encoding="utf-8")
    assert '<section class="banner verdict-allow-with-conditions">' in text
    for argv in (["scan", str(src.parent), "--html", str(tmp_path / "no" / "r.html")],
                 ["report", str(src.parent), "-o", str(tmp_path / "no" / "r.html")],
                 ["report", str(src.parent), "-o", str(tmp_path)]):
        r = subprocess.run([*CLI, *argv, "--no-cache", "--no-progress"], capture_output=True, text=True)
        assert r.returncode == 3, (argv, r.stderr)
        assert "scanning" not in r.stderr and not (tmp_path / "no").exists()
