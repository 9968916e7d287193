"""`lora-audit license`, `scan` and `rules` end to end: real subprocesses, real files, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from audit import corpus

from tests.procs import committed_paths, traced, wait_for_traced

PROG = [sys.executable, "-c", "import cli; cli.main()"]


def run(*args, env=None, timeout=180):
    e = dict(os.environ, COLUMNS="200", TERM="xterm-256color", **(env or {}))
    return subprocess.run([*PROG, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e)


def flux(path: Path, *, variant_claims: bool = False, metadata=None, seed: int = 0) -> Path:
    s = corpus.build("flux1", "kohya", rank=2, max_modules=8, text_encoders=False, dtype="F16", seed=seed)
    if not variant_claims:  # leave only the family-level claim (ss_base_model_version = flux1)
        s.metadata.pop("ss_sd_model_name", None)
        s.metadata.pop("modelspec.architecture", None)
    s.metadata.update(metadata or {})
    corpus.write(path, s)
    return path


def sd15(path: Path, seed: int = 0, metadata=None) -> Path:
    s = corpus.build("sd1", "kohya", rank=2, max_modules=6, text_encoders=False, dtype="F16", seed=seed,
                     metadata=metadata)
    corpus.write(path, s)
    return path


def test_license_flux_ambiguity_denies_hosting_unless_asserted(tmp_path):
    f = flux(tmp_path / "style.safetensors")
    r = run("license", f, "--policy", "commercial-hosted-service", "--json")
    assert r.returncode == 1, r.stderr
    rec = json.loads(r.stdout)
    (pv,) = rec["policies"]
    assert pv["verdict"] == "deny"
    assert pv["by_lineage"]["flux1-schnell"] == "allow" and pv["by_lineage"]["flux1-dev"] == "deny"
    assert rec["licensing"]["asserted"] is None

    r = run("license", f, "--policy", "commercial-hosted-service", "--assume-base", "flux1-schnell", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["policies"][0]["verdict"] == "allow"
    assert rec["licensing"]["basis"] == "asserted" and rec["licensing"]["asserted"] == "flux1-schnell"
    assert [lin["id"] for lin in rec["licensing"]["lineages"]] == ["flux1-schnell"]

    # the terminal view states the disclaimer, the verdict and the asserted base
    r = run("license", f, "--policy", "commercial-hosted-service", "--assume-base", "flux1-schnell")
    assert r.returncode == 0
    assert "Not legal advice" in r.stdout and "allow" in r.stdout and "flux1-schnell" in r.stdout


def test_license_apache_declared_on_flux_dev(tmp_path):
    f = flux(tmp_path / "x.safetensors", variant_claims=True, metadata={"modelspec.license": "Apache-2.0"})
    r = run("license", f, "--policy", "open-redistribution", "--json")
    assert r.returncode == 1
    rec = json.loads(r.stdout)
    codes = {x["code"] for x in rec["findings"]}
    assert {"LA403", "LA400", "LA409"} <= codes
    assert rec["licensing"]["declared"][0]["verdict"] == "conflicts"


def test_license_sidecar_claims_and_facts(tmp_path):
    f = sd15(tmp_path / "a.safetensors")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\nbase_model: runwayml/stable-diffusion-v1-5\n---\n",
                                        encoding="utf-8")
    (tmp_path / "a.civitai.info").write_text(json.dumps({"baseModel": "SD 1.5", "model": {
        "allowCommercialUse": "Image", "allowNoCredit": False}}), encoding="utf-8")
    r = run("license", f, "--json", "--revenue", "2M", "--territory", "US,DE")
    assert r.returncode == 1, r.stderr
    rec = json.loads(r.stdout)
    assert rec["claims"]["permissions"]["allowCommercialUse"] == ["Image"]
    assert rec["claims"]["permissions"]["paid_generation"] is False
    declared = rec["licensing"]["declared"]
    assert declared[0]["license"] == "cc-by-nc-4.0" and declared[0]["verdict"] == "more-restrictive"
    verdicts = {p["policy"]: p["verdict"] for p in rec["policies"]}
    assert verdicts["commercial-hosted-service"] == "deny"  # CC BY-NC and the author's Civitai flags
    assert verdicts["internal-research"] in ("allow", "allow-with-conditions")
    ctx = rec["policies"][0]["context"]
    assert ctx["revenue_usd"] == 2_000_000 and ctx["territories"] == ["US", "DE"]


@pytest.mark.parametrize("args, needle", [
    (["--policy", "no-such-policy"], "unknown policy"),
    (["--assume-base", "flux9"], "not a base family"),
    (["--revenue", "lots"], "not a number"),
    (["--fact", "novalue"], "KEY=VALUE"),
])
def test_license_usage_errors_exit_3(tmp_path, args, needle):
    f = sd15(tmp_path / "a.safetensors")
    r = run("license", f, *args)
    assert r.returncode == 3 and needle in (r.stderr + r.stdout)


def test_user_policy_file(tmp_path):
    f = sd15(tmp_path / "a.safetensors")
    pol = tmp_path / "no-sd1.yaml"
    pol.write_text("schema: lora-audit/policy/v1\nid: no-sd1\nname: No SD1\ncontext: {mode: local_private}\n"
                   "rules:\n  - id: ban\n    applies_to: [adapter]\n    when: \"lineage.family == 'sd1'\"\n"
                   "    action: deny\n    message: \"we do not ship {lineage.name} adapters\"\n", encoding="utf-8")
    r = run("license", f, "--policy", pol, "--json")
    assert r.returncode == 1
    (pv,) = json.loads(r.stdout)["policies"]
    assert pv["verdict"] == "deny" and "we do not ship Stable Diffusion 1.5" in pv["reasons"][0]["message"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: lora-audit/policy/v1\nid: bad\nname: B\ncontext: {mode: local_private}\n"
                   "rules:\n  - {id: r, action: deny, message: m, when: \"__import__('os')\"}\n", encoding="utf-8")
    r = run("license", f, "--policy", bad)
    assert r.returncode == 3 and "only the functions" in r.stderr


def _mixed_folder(d: Path) -> dict[str, str | None]:
    """name -> expected error code (None: readable)."""
    d.mkdir()
    sd15(d / "good-sd.safetensors")
    flux(d / "good-flux.safetensors", seed=1)
    (d / "sub").mkdir()
    sd15(d / "sub" / "renamed.dat", seed=2)  # found by content
    full = (d / "good-sd.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(full[: len(full) - 100])
    (d / "zero.safetensors").write_bytes(b"")
    os.mkfifo(d / "pipe.safetensors")
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(100_000)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    (d / "many.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    (d / "README.md").write_text("not an adapter\n", encoding="utf-8")
    return {"good-sd.safetensors": None, "good-flux.safetensors": None, "sub/renamed.dat": None,
            "truncated.safetensors": "LA118", "zero.safetensors": "LA102", "pipe.safetensors": "LA100",
            "many.safetensors": None}


def test_scan_mixed_folder_reports_every_file(tmp_path):
    d = tmp_path / "uploads"
    expected = _mixed_folder(d)
    out = tmp_path / "out.jsonl"
    r = run("scan", d, "--policy", "commercial-hosted-service", "--format", "jsonl", "--out", out,
            "--cache", tmp_path / "c.sqlite", "--no-progress", "--summary-json", tmp_path / "s.json")
    assert r.returncode == 2, r.stderr  # unreadable files present
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    got = {os.path.relpath(x["file"]["path"], d): x for x in recs}
    assert set(got) == set(expected)
    for name, code in expected.items():
        rec = got[name]
        if code is None:
            assert rec["status"] == "ok", name
        else:
            assert rec["status"] == "error" and rec["error"]["code"] == code, name
    assert [x["file"]["path"] for x in recs] == sorted(x["file"]["path"] for x in recs)  # path order
    assert got["good-flux.safetensors"]["policies"][0]["verdict"] == "deny"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["total"] == len(expected) and summary["errors"] == 3
    assert summary["max_worker_peak_rss_mb"] > 0


def test_license_exit_code_follows_fail_verdict_and_unreadable_files(tmp_path):
    """SD1.5 under commercial-hosted-service is allow-with-conditions: exit 1 only when --fail-verdict is that
    lenient; a file that cannot be read makes it 2, whatever the verdicts."""
    f = sd15(tmp_path / "a.safetensors")
    pol = ("--policy", "commercial-hosted-service", "--json")
    assert run("license", f, *pol).returncode == 0  # default --fail-verdict deny
    assert run("license", f, *pol, "--fail-verdict", "needs-review").returncode == 0
    assert run("license", f, *pol, "--fail-verdict", "allow-with-conditions").returncode == 1
    assert run("license", f, *pol, "--fail-verdict", "allow-with-conditions", "--fail-on", "never").returncode == 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert run("license", f, bad, *pol, "--fail-verdict", "never").returncode == 2


def test_scan_exit_codes_and_machine_formats(tmp_path):
    d = tmp_path / "ok"
    d.mkdir()
    sd15(d / "a.safetensors")
    cache = tmp_path / "c.sqlite"
    base = ["scan", d, "--cache", cache, "--no-progress"]
    assert run(*base, "--policy", "commercial-hosted-service").returncode == 0  # allow with conditions
    assert run(*base, "--policy", "commercial-hosted-service", "--fail-verdict",
               "allow-with-conditions").returncode == 1
    flux(d / "b.safetensors")
    r = run(*base, "--policy", "commercial-hosted-service", "--format", "sarif")
    assert r.returncode == 1
    sarif = json.loads(r.stdout)
    assert sarif["version"] == "2.1.0"
    assert any(res["ruleId"] == "LA400" for res in sarif["runs"][0]["results"])
    r = run(*base, "--policy", "commercial-hosted-service", "--format", "junit")
    suite = ET.fromstring(r.stdout).find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    r = run(*base, "--policy", "commercial-hosted-service", "--format", "json", "--fail-verdict", "never",
            "--fail-on", "never")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert len(doc["records"]) == 2 and doc["summary"]["cached"] == 2 and doc["policies"] == [
        "commercial-hosted-service"]
    r = run(*base, "--policy", "commercial-hosted-service")
    assert "DENY" in r.stdout and "Summary" in r.stdout


def test_scan_output_is_atomic_and_cached_rescan_reads_nothing(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        sd15(d / f"{i}.safetensors", seed=i)
    trace = tmp_path / "trace"
    out = tmp_path / "o.jsonl"
    args = ["scan", d, "--format", "jsonl", "--out", out, "--cache", tmp_path / "c.sqlite", "--no-progress"]
    assert run(*args, env={"LORA_AUDIT_SCAN_TRACE": str(trace)}).returncode == 0
    assert len(trace.read_text().splitlines()) == 3
    trace.unlink()
    first = out.read_text()
    assert run(*args, env={"LORA_AUDIT_SCAN_TRACE": str(trace)}).returncode == 0
    assert not trace.exists() or trace.read_text() == ""  # nothing analysed: every record from the cache
    assert out.read_text() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.jsonl")]  # no temporary left


def test_scan_killed_halfway_resumes_without_rereading(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    names = []
    for i in range(24):
        names.append(str(sd15(d / f"f{i:02d}.safetensors", seed=i)))
    trace1, trace2 = tmp_path / "t1", tmp_path / "t2"
    cache = tmp_path / "c.sqlite"
    out = tmp_path / "o.jsonl"
    args = [*PROG, "scan", str(d), "--format", "jsonl", "--out", str(out), "--cache", str(cache), "--jobs", "1",
            "--no-progress"]
    proc = subprocess.Popen(args, env=dict(os.environ, LORA_AUDIT_SCAN_TRACE=str(trace1)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_traced(proc, trace1, 8)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the scan and its worker, without warning
        proc.wait(timeout=30)
    assert not out.exists()  # the output appears whole or not at all
    committed = committed_paths(cache)
    first = set(traced(trace1))
    assert 1 <= len(committed) < len(names)
    assert committed <= first
    r = subprocess.run(args, env=dict(os.environ, LORA_AUDIT_SCAN_TRACE=str(trace2)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    second = set(traced(trace2))
    assert not (second & committed)  # files finished before the kill are not read again
    assert second | committed == set(names)
    assert len(out.read_text().splitlines()) == len(names)


def test_rules_list_and_show():
    r = run("rules", "list", "--json")
    data = json.loads(r.stdout)
    assert {"licenses", "policies", "bases", "findings"} == set(data)
    assert {p["id"] for p in data["policies"]} >= {"commercial-hosted-service", "commercial-outputs-only",
                                                 "internal-research", "open-redistribution"}
    assert any(x["id"] == "flux-1-dev-nc-v1.1.1" and x["model_commercial"] == "no" for x in data["licenses"])
    r = run("rules", "list", "policies")
    assert r.returncode == 0 and "commercial-hosted-service" in r.stdout
    r = run("rules", "show", "flux1-schnell")
    assert r.returncode == 0 and "apache-2.0" in r.stdout
    r = run("rules", "show", "LA403")
    assert "declared license conflicts" in r.stdout
    r = run("rules", "show", "stability-ai-community-2024-07-05")
    assert "Powered by Stability AI" in r.stdout
    assert run("rules", "show", "nothing-like-this").returncode == 3
