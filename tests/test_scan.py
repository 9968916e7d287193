"""Batch scan (audit/scan.py): discovery, worker isolation, the SQLite cache, resuming, ordered delivery.

Misbehaving workers come from tests/scan_targets.py. The trace file (LORA_AUDIT_SCAN_TRACE) lists the files a
worker analysed, which is how these tests tell an analysed file from a cached one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from audit import scan
from audit.analyse import Options
from audit.corpus import write_safetensors

from tests.procs import committed_paths, traced, wait_for_traced, wait_group_gone

TESTS = Path(__file__).resolve().parent
STEM = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def lora(path, seed: int = 0, layers: int = 1) -> Path:
    """A tiny kohya LoRA (F32, 4x64 and 32x4 factors per layer)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for j in range(layers):
        stem = STEM.replace("blocks_0_attentions_0", f"blocks_{j // 2}_attentions_{j % 2}")
        tensors[f"{stem}.lora_down.weight"] = rng.standard_normal((4, 64)).astype(np.float32)
        tensors[f"{stem}.lora_up.weight"] = (rng.standard_normal((32, 4)) * (j + 1)).astype(np.float32)
        tensors[f"{stem}.alpha"] = np.array(2.0, dtype=np.float32)
    write_safetensors(path, tensors, metadata={"ss_network_dim": "4"})
    return Path(path)


def st_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def config(tmp_path, **kw) -> scan.ScanConfig:
    kw.setdefault("cache_path", str(tmp_path / "cache" / "scan.sqlite"))
    kw.setdefault("options", Options(device="cpu"))
    kw.setdefault("timeout_s", 120)
    return scan.ScanConfig(**kw)


class Collect:
    def __init__(self):
        self.items: list[scan.ScanResult] = []
        self.progress: list[tuple[int, int, str, bool]] = []

    def __call__(self, result, cached):
        assert result.cached == cached
        self.items.append(result)

    def on_progress(self, done, total, path, cached):
        self.progress.append((done, total, path, cached))

    def by_name(self) -> dict[str, scan.ScanResult]:
        return {os.path.basename(r.path): r for r in self.items}


def run_scan(paths, cfg, trace: Path | None = None, monkeypatch=None) -> tuple[Collect, scan.Summary]:
    if trace is not None:
        os.environ[scan.TRACE_ENV] = str(trace)
    try:
        out = Collect()
        summary = scan.run(scan.discover([str(p) for p in paths]), cfg, out, out.on_progress)
    finally:
        os.environ.pop(scan.TRACE_ENV, None)
    return out, summary


@pytest.fixture(autouse=True)
def _no_trace_leak():
    os.environ.pop(scan.TRACE_ENV, None)
    yield
    os.environ.pop(scan.TRACE_ENV, None)
    assert not multiprocessing.active_children(), "a scan left worker processes behind"


# ---------------------------------------------------------------------------------------------------------
# discovery


def test_discovery_by_content_and_extension(tmp_path):
    d = tmp_path / "d"
    (d / ".hidden" / "deep").mkdir(parents=True)
    lora(d / "model.dat")  # safetensors content under another name
    lora(d / "UPPER.SAFETENSORS")
    lora(d / ".hidden" / "deep" / "x.sft")
    lora(d / "card.json")  # sidecar names are never rows, whatever they hold
    (d / "README.md").write_text("---\nbase_model: x\n---\n")
    (d / "model.civitai.info").write_text("{}")
    (d / "notes.txt").write_text("plain text, long enough to be sniffed")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (d / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    (d / "weights.bin").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    (d / "empty.safetensors").write_bytes(b"")
    # a safetensors-looking prefix with a header length over 100 MiB is not sniffed as one
    (d / "big.dat").write_bytes(struct.pack("<Q", 101 * 2**20) + b"{" + b" " * 32)
    entries = scan.discover([d])
    got = [os.path.relpath(e.path, d) for e in entries]
    assert got == sorted(got)
    assert set(got) == {"model.dat", "UPPER.SAFETENSORS", os.path.join(".hidden", "deep", "x.sft"), "old.ckpt",
                        "weights.bin", "empty.safetensors"}
    assert all(e.kind == "file" and not e.is_dir_adapter for e in entries)


def test_discovery_peft_and_diffusers_folders_are_one_row(tmp_path):
    d = tmp_path / "d"
    peft = d / "peft"
    (peft / "checkpoint-100").mkdir(parents=True)
    lora(peft / "adapter_model.safetensors")
    (peft / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 4}')
    (peft / "README.md").write_text("card")
    lora(peft / "checkpoint-100" / "extra.safetensors")
    diff = d / "diffusers"
    diff.mkdir()
    lora(diff / "pytorch_lora_weights.safetensors")
    lone = d / "lone"  # PEFT weights without a config: a plain file row
    lone.mkdir()
    lora(lone / "adapter_model.safetensors")
    entries = scan.discover([d, peft])  # the folder given twice (directly and inside d): one row
    rows = {os.path.relpath(e.path, d): e for e in entries}
    assert set(rows) == {"peft", os.path.join("peft", "checkpoint-100", "extra.safetensors"), "diffusers",
                         os.path.join("lone", "adapter_model.safetensors")}
    assert rows["peft"].is_dir_adapter and rows["peft"].kind == "dir"
    assert rows["diffusers"].is_dir_adapter
    assert not rows[os.path.join("lone", "adapter_model.safetensors")].is_dir_adapter


def test_discovery_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    lora(outside / "real.safetensors")
    d = tmp_path / "d"
    d.mkdir()
    (d / "link.safetensors").symlink_to(outside / "real.safetensors")
    (d / "link.dat").symlink_to(outside / "real.safetensors")  # no listed extension: not a row, not read
    (d / "linkdir").symlink_to(outside, target_is_directory=True)
    entries = scan.discover([d])
    assert [(os.path.basename(e.path), e.kind) for e in entries] == [("link.safetensors", "special")]
    out, _ = run_scan([d], config(tmp_path, jobs=1, cache=False))
    (r,) = out.items
    assert r.status == "error" and r.error_code == "LA100"
    assert "symlink" in r.record.error.message


def _in_thread(fn, limit=60.0):
    box = {}

    def go():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), "blocked (a FIFO was opened?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_fifo_is_listed_and_never_opened(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.safetensors")
    os.mkfifo(d / "pipe.dat")  # not a listed extension: not a row (and never sniffed)
    entries = _in_thread(lambda: scan.discover([d]))
    assert [(os.path.basename(e.path), e.kind) for e in entries] == [("pipe.safetensors", "special")]
    out, _ = _in_thread(lambda: run_scan([d], config(tmp_path, jobs=1, cache=False)))
    (r,) = out.items
    assert r.error_code == "LA100"


def test_unreadable_folder_is_an_error_row(tmp_path, monkeypatch):
    d = tmp_path / "d"
    (d / "locked").mkdir(parents=True)
    lora(d / "a.safetensors")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    entries = scan.discover([d, tmp_path / "missing"])
    kinds = {os.path.basename(e.path): e.kind for e in entries}
    assert kinds == {"a.safetensors": "file", "locked": "error", "missing": "error"}
    monkeypatch.undo()
    out = Collect()
    scan.run(entries, config(tmp_path, jobs=1), out)
    codes = {os.path.basename(r.path): r.error_code for r in out.items}
    assert codes == {"a.safetensors": None, "locked": "LA101", "missing": "LA101"}


# ---------------------------------------------------------------------------------------------------------
# the mixed folder: every entry one record, the right codes


def test_mixed_folder(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(3):
        lora(d / f"good{i}.safetensors", seed=i, layers=3)
    whole = lora(tmp_path / "whole.safetensors", seed=9).read_bytes()
    (d / "truncated.safetensors").write_bytes(whole[: len(whole) - 100])
    (d / "cut-header.safetensors").write_bytes(whole[:20])
    os.mkfifo(d / "fifo.safetensors")
    (d / "zero.safetensors").write_bytes(b"")
    many = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(100_000)}
    (d / "many-tensors.safetensors").write_bytes(st_bytes(many))
    (d / "legacy.ckpt").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.")
    (d / "disguised.safetensors").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.")
    out, summary = _in_thread(lambda: run_scan([d], config(tmp_path, jobs=2)), limit=120)
    got = {os.path.basename(r.path): (r.status, r.error_code) for r in out.items}
    assert len(out.items) == len(got) == 10  # one record per entry
    assert [r.path for r in out.items] == sorted(r.path for r in out.items)
    for i in range(3):
        assert got[f"good{i}.safetensors"] == ("ok", None)
    assert got["many-tensors.safetensors"][0] == "ok"
    assert got["truncated.safetensors"] == ("error", "LA118")
    assert got["cut-header.safetensors"] == ("error", "LA103")
    assert got["fifo.safetensors"] == ("error", "LA100")
    assert got["zero.safetensors"] == ("error", "LA102")
    assert got["legacy.ckpt"] == ("error", "LA120")
    assert got["disguised.safetensors"] == ("error", "LA125")
    assert summary.total == 10 and summary.analysed == 10 and summary.errors == 6
    rec = out.by_name()["good0.safetensors"].record
    assert rec.hashes is not None and len(rec.layers) == 3


def test_keep_layers_keeps_the_strongest(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors", layers=5)
    out, _ = run_scan([d], config(tmp_path, jobs=1, keep_layers=2))
    rec = out.items[0].record
    assert rec.layers_omitted == 3 and len(rec.layers) == 2
    assert rec.adapter.layers == 5  # the summary still counts every layer
    assert rec.layers[0].fro >= rec.layers[1].fro
    # the layers up-scaled by 5 and 4 are the strongest ones
    assert {layer.key.rsplit(":", 1)[-1] for layer in rec.layers} == {
        "down_blocks_2_attentions_0_transformer_blocks_0_attn2_to_k",
        "down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k"}


def test_trim_layers_order_with_missing_norms():
    from audit.record import AuditRecord, FileInfo, LayerRecord

    def layer(key, fro):
        return LayerRecord(key=key, component="unet", module=key, block="b", kind="lora", format="kohya", tensors=[],
                           out_features=1, in_features=1, kernel=[], rank=1, alpha=None, scale=1.0,
                           scale_rule="x", delta_basis="exact", fro=fro)

    rec = AuditRecord(file=FileInfo(path="x", name="x", size=0),
                      layers=[layer("a", None), layer("b", 1.0), layer("c", float("nan")), layer("d", 3.0),
                              layer("e", 1.0)])
    scan.trim_layers(rec, 3)
    assert [l.key for l in rec.layers] == ["d", "b", "e"] and rec.layers_omitted == 2
    scan.trim_layers(rec, None)
    assert len(rec.layers) == 3


# ---------------------------------------------------------------------------------------------------------
# isolation: time limit, memory limit, crashes


def test_time_limit_stops_the_worker_and_the_rest_goes_on(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a", "b-hang", "c", "d"):
        lora(d / f"{name}.safetensors")
    out, summary = run_scan([d], config(tmp_path, jobs=1, timeout_s=2.0, target="scan_targets:hang"))
    got = {os.path.basename(r.path): r.error_code for r in out.items}
    assert got == {"a.safetensors": None, "b-hang.safetensors": "LA126", "c.safetensors": None,
                   "d.safetensors": None}
    assert summary.timeouts == 1 and summary.workers_started == 2
    err = out.by_name()["b-hang.safetensors"].record
    assert err.status == "error" and err.findings == [err.error] and "time limit" in err.error.message
    assert err.file.size == (d / "b-hang.safetensors").stat().st_size


def test_memory_limit_gives_la127_and_a_fresh_worker(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a", "b-boom", "c"):
        lora(d / f"{name}.safetensors")
    out, summary = run_scan([d], config(tmp_path, jobs=1, memory_mb=1024, target="scan_targets:allocate"))
    got = {os.path.basename(r.path): r.error_code for r in out.items}
    assert got == {"a.safetensors": None, "b-boom.safetensors": "LA127", "c.safetensors": None}
    assert summary.memory_errors == 1 and summary.workers_started == 2
    assert summary.memory_limit_enforced is True
    assert summary.worker_baseline_vm_mb is not None and summary.worker_baseline_vm_mb + 256 < 1024


def test_memory_limit_below_an_idle_worker_is_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors")
    with pytest.raises(scan.ScanError, match="memory limit"):
        run_scan([d], config(tmp_path, jobs=1, memory_mb=64))


def test_crashes_give_la128_and_the_rest_goes_on(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a", "b-abort", "c", "d-segv", "e-exit", "f", "g-raise", "h"):
        lora(d / f"{name}.safetensors")
    out, summary = run_scan([d], config(tmp_path, jobs=2, target="scan_targets:crash"))
    by = out.by_name()
    assert [os.path.basename(r.path) for r in out.items] == sorted(by)
    for ok in ("a", "c", "f", "h"):
        assert by[f"{ok}.safetensors"].status == "ok"
    for bad in ("b-abort", "d-segv", "e-exit", "g-raise"):
        assert by[f"{bad}.safetensors"].error_code == "LA128"
    assert "SIGABRT" in by["b-abort.safetensors"].record.error.message
    assert "SIGSEGV" in by["d-segv.safetensors"].record.error.message
    assert "status 3" in by["e-exit.safetensors"].record.error.message
    assert "ZeroDivisionError" in by["g-raise.safetensors"].record.error.message
    assert summary.crashes == 4


def test_bad_target_is_a_scan_error(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors")
    with pytest.raises(scan.ScanError, match="could not start"):
        run_scan([d], config(tmp_path, jobs=1, target="no_such_module_here:fn"))


# ---------------------------------------------------------------------------------------------------------
# the cache


def test_second_scan_comes_from_the_cache_without_analysis(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        lora(d / f"f{i}.safetensors", seed=i)
    (d / "zero.safetensors").write_bytes(b"")
    cfg = config(tmp_path)
    first, s1 = run_scan([d], cfg, trace=tmp_path / "t1")
    assert sorted(traced(tmp_path / "t1")) == sorted(str(p) for p in d.iterdir())
    assert s1.analysed == 5 and s1.cached == 0 and not any(r.cached for r in first.items)
    second, s2 = run_scan([d], cfg, trace=tmp_path / "t2")
    assert traced(tmp_path / "t2") == []
    assert s2.cached == 5 and s2.analysed == 0 and s2.workers_started == 0
    assert all(r.cached for r in second.items)
    assert [r.json for r in second.items] == [r.json for r in first.items]
    assert [p[3] for p in second.progress] == [True] * 5
    assert second.by_name()["zero.safetensors"].error_code == "LA102"  # coded errors are cached too
    # the same records as objects and as JSON text
    objs = []
    scan.run(scan.discover([d]), cfg, lambda rec, cached: objs.append((rec, cached)), want="record")
    assert [rec.to_json() for rec, _ in objs] == [r.json for r in first.items]


def test_touched_or_modified_file_is_analysed_again_alone(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        lora(d / f"f{i}.safetensors", seed=i)
    cfg = config(tmp_path)
    run_scan([d], cfg)
    st = (d / "f1.safetensors").stat()
    os.utime(d / "f1.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    out, summary = run_scan([d], cfg, trace=tmp_path / "t")
    assert traced(tmp_path / "t") == [str(d / "f1.safetensors")]
    assert summary.analysed == 1 and summary.cached == 3
    assert [r.cached for r in out.items] == [True, False, True, True]
    lora(d / "f2.safetensors", seed=42)  # new content
    out, _ = run_scan([d], cfg, trace=tmp_path / "t2")
    assert traced(tmp_path / "t2") == [str(d / "f2.safetensors")]
    fresh = out.by_name()["f2.safetensors"]
    assert not fresh.cached and fresh.record.hashes.sha256.lower() == _sha256(d / "f2.safetensors")


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_changed_sidecar_re_analyses_its_adapter(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a", "b"):
        lora(d / f"{name}.safetensors")
    (d / "a.civitai.info").write_text(json.dumps({"baseModel": "SD 1.5", "trainedWords": ["one"]}))
    peft = d / "peft"
    peft.mkdir()
    lora(peft / "adapter_model.safetensors")
    (peft / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 4}')
    cfg = config(tmp_path)
    first, _ = run_scan([d], cfg)
    assert "a.civitai.info" in first.by_name()["a.safetensors"].record.claims.sidecars
    (d / "a.civitai.info").write_text(json.dumps({"baseModel": "SDXL 1.0", "trainedWords": ["two"]}))
    (peft / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8}')
    out, _ = run_scan([d], cfg, trace=tmp_path / "t")
    assert sorted(traced(tmp_path / "t")) == [str(d / "a.safetensors"), str(peft)]
    assert {os.path.basename(r.path): r.cached for r in out.items} == {"a.safetensors": False, "b.safetensors": True,
                                                                        "peft": False}
    words = [t.word for t in out.by_name()["a.safetensors"].record.claims.triggers]
    assert "two" in words and "one" not in words
    # a new sidecar appearing beside b counts too
    (d / "b.json").write_text(json.dumps({"activation text": "hello"}))
    out, _ = run_scan([d], cfg, trace=tmp_path / "t2")
    assert traced(tmp_path / "t2") == [str(d / "b.safetensors")]


def test_options_that_change_the_record_miss_the_cache(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors", layers=3)
    run_scan([d], config(tmp_path))
    out, _ = run_scan([d], config(tmp_path, options=Options(device="cpu", threads=1, hash_threads=1)),
                      trace=tmp_path / "t0")
    assert traced(tmp_path / "t0") == [] and out.items[0].cached  # thread counts change nothing
    out, _ = run_scan([d], config(tmp_path, keep_layers=1), trace=tmp_path / "t1")
    assert traced(tmp_path / "t1") == [str(d / "a.safetensors")] and len(out.items[0].record.layers) == 1
    out, _ = run_scan([d], config(tmp_path, keep_layers=1, options=Options(device="cpu", spectrum=False)),
                      trace=tmp_path / "t2")
    assert traced(tmp_path / "t2") == [str(d / "a.safetensors")]
    assert out.items[0].record.layers[0].spectrum == []
    assert scan.options_key(Options(), 10) == scan.options_key(Options(threads=1), 10)
    assert scan.options_key(Options(), 10) != scan.options_key(Options(hashes=False), 10)
    assert scan.options_key(Options(), 10) != scan.options_key(Options(), None)


def test_resource_limit_errors_are_retried_with_a_larger_limit(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a-hang.safetensors")
    cfg = config(tmp_path, jobs=1, timeout_s=1.0, target="scan_targets:hang")
    out, _ = run_scan([d], cfg)
    assert out.items[0].error_code == "LA126"
    out, _ = run_scan([d], cfg, trace=tmp_path / "t")
    assert out.items[0].cached and traced(tmp_path / "t") == []  # the same limit: the hang is not repeated
    cfg.timeout_s = 1.5
    out, _ = run_scan([d], cfg, trace=tmp_path / "t2")
    assert not out.items[0].cached and out.items[0].error_code == "LA126"
    assert traced(tmp_path / "t2") == [str(d / "a-hang.safetensors")]


def test_cache_off_and_a_broken_cache_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors")
    out, s = run_scan([d], config(tmp_path, jobs=1, cache=False))
    assert s.cache_note == "disabled" and out.items[0].status == "ok"
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    out, s = run_scan([d], config(tmp_path, jobs=1, cache_path=str(bad)))
    assert out.items[0].status == "ok" and s.cache_note and "cache not used" in s.cache_note


def test_licensing_settings_change_re_evaluates_in_the_parent(tmp_path):
    licensing = pytest.importorskip("audit.licensing")
    if not hasattr(licensing, "Settings") or not hasattr(licensing, "settings_key"):
        pytest.skip("audit.licensing has no Settings yet")
    d = tmp_path / "d"
    d.mkdir()
    lora(d / "a.safetensors")
    (d / "zero.safetensors").write_bytes(b"")
    s1 = licensing.Settings(assume=())
    s2 = licensing.Settings(assume=("sd1",))
    assert licensing.settings_key(s1) != licensing.settings_key(s2)
    first, _ = run_scan([d], config(tmp_path, options=Options(device="cpu", licensing=s1)))
    assert first.by_name()["a.safetensors"].record.licensing.asserted is None
    out, summary = run_scan([d], config(tmp_path, options=Options(device="cpu", licensing=s2)), trace=tmp_path / "t")
    assert traced(tmp_path / "t") == [] and all(r.cached for r in out.items)
    assert summary.relicensed == 1  # the ok record; the error record has no licensing
    rec = out.by_name()["a.safetensors"].record
    assert rec.licensing is not None and rec.licensing.asserted is not None
    db = sqlite3.connect(tmp_path / "cache" / "scan.sqlite")
    keys = {k for (k,) in db.execute("SELECT settings_key FROM results r JOIN files f ON f.key = r.key "
                                     "WHERE f.path = ?", (os.fsencode(str(d / "a.safetensors")),))}
    db.close()
    assert keys == {licensing.settings_key(s2)}
    again, summary = run_scan([d], config(tmp_path, options=Options(device="cpu", licensing=s2)))
    assert summary.relicensed == 0 and again.items[0].json == out.items[0].json


# ---------------------------------------------------------------------------------------------------------
# resume, interruption, ordering


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from audit import scan
from audit.analyse import Options
cfg = scan.ScanConfig(jobs=1, cache_path={db!r}, target="scan_targets:slow", options=Options(device="cpu"))
scan.run(scan.discover([{folder!r}]), cfg, lambda r, c: None)
print("finished")
"""


def test_a_killed_scan_resumes_without_redoing_committed_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    files = sorted(str(lora(d / f"f{i:02d}.safetensors", seed=i)) for i in range(12))
    db = tmp_path / "cache.sqlite"
    trace1 = tmp_path / "t1"
    env = dict(os.environ, **{scan.TRACE_ENV: str(trace1), "OPENBLAS_NUM_THREADS": "1"})
    code = DRIVER.format(tests=str(TESTS), db=str(db), folder=str(d))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_traced(proc, trace1, 6)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # the workers notice that their parent is gone and leave on their own
        wait_group_gone(proc.pid, 30, "worker processes outlived the killed scan")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    committed = committed_paths(db)
    assert 0 < len(committed) < len(files)
    assert committed <= set(traced(trace1))

    out, summary = run_scan([d], config(tmp_path, cache_path=str(db), jobs=2), trace=tmp_path / "t2")
    again = set(traced(tmp_path / "t2"))
    assert [r.path for r in out.items] == files  # every file reported, once, in order
    assert all(r.status == "ok" for r in out.items)
    assert again.isdisjoint(committed) and again | committed == set(files)
    assert {r.path for r in out.items if r.cached} == committed
    assert summary.cached == len(committed) and summary.analysed == len(files) - len(committed)


def test_sigterm_stops_the_scan_and_its_workers(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(8):
        lora(d / f"f{i}.safetensors", seed=i)
    db = tmp_path / "cache.sqlite"
    trace = tmp_path / "t"
    code = DRIVER.format(tests=str(TESTS), db=str(db), folder=str(d)).replace(
        "scan.run(", "try:\n    scan.run(").replace('print("finished")',
                                                    'except KeyboardInterrupt:\n    print("interrupted")')
    env = dict(os.environ, **{scan.TRACE_ENV: str(trace), "OPENBLAS_NUM_THREADS": "1"})
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_traced(proc, trace, 2)
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert stdout.strip() == "interrupted", stderr
    assert proc.returncode == 0
    # SIGTERM killed the workers at once: the process group is empty right after the parent returned
    wait_group_gone(proc.pid, 10, "workers outlived the terminated scan")
    committed = committed_paths(db)
    assert committed <= set(traced(trace)) and len(committed) < 8


def test_hostile_file_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/we\nird\xff\x1b[31m.safetensors"
    lora(raw.decode("utf-8", "surrogateescape"))
    cfg = config(tmp_path, jobs=1)
    first, _ = run_scan([d], cfg, trace=tmp_path / "t")
    (r,) = first.items
    assert r.status == "ok" and os.fsencode(r.path) == raw and os.fsencode(r.record.file.path) == raw
    assert (tmp_path / "t").read_bytes() == raw.replace(b"\n", b"\\n") + b"\n"  # one escaped line
    second, _ = run_scan([d], cfg)
    assert second.items[0].cached and second.items[0].json == r.json


def test_keyboard_interrupt_kills_workers_and_keeps_what_was_committed(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(6):
        lora(d / f"f{i}.safetensors", seed=i)
    db = tmp_path / "c.sqlite"
    seen = []

    def on_record(result, cached):
        seen.append(result.path)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan.run(scan.discover([d]), config(tmp_path, cache_path=str(db), target="scan_targets:slow"), on_record)
    assert not multiprocessing.active_children()
    assert set(seen) <= committed_paths(db)  # whatever was delivered had been committed first


def test_records_arrive_in_path_order_whatever_the_completion_order(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    stems = ["a-late"] + [f"b{i}" for i in range(7)]
    for i, name in enumerate(stems):
        lora(d / f"{name}.safetensors", seed=i)
    out, _ = run_scan([d], config(tmp_path, jobs=2, target="scan_targets:varied"))
    delivered = [os.path.basename(r.path) for r in out.items]
    assert delivered == sorted(f"{n}.safetensors" for n in stems)
    assert [p[0] for p in out.progress] == list(range(1, 9))
    assert all(r.status == "ok" for r in out.items)


# ---------------------------------------------------------------------------------------------------------
# atomic output


def test_atomic_output(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), scan.AtomicOutput(target) as fh:
        fh.write("partial\n")
        raise RuntimeError("stop")
    assert target.read_text() == "old\n"
    with pytest.raises(KeyboardInterrupt), scan.AtomicOutput(tmp_path / "new.jsonl") as fh:
        fh.write("partial\n")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file, no partial output
    with scan.AtomicOutput(target) as fh:
        for i in range(3):
            fh.write(f"{i}\n")
    assert target.read_text() == "0\n1\n2\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~umask
    with scan.AtomicOutput(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "out.jsonl"]


def test_rules_version_is_stable():
    assert scan.rules_version() == scan.rules_version()
    assert len(scan.rules_version()) >= 16
