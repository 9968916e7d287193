"""The `lora-audit` command as a user runs it: a real subprocess, real exit codes, real output."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from audit.corpus import write_safetensors

PROG = [sys.executable, "-c", "import cli; cli.main()"]


def run(*args, cwd=None):
    env = dict(os.environ, COLUMNS="160", TERM="xterm-256color")
    return subprocess.run([*PROG, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def small_lora(path, metadata=None, nan=False, zero=False):
    rng = np.random.default_rng(0)
    down = rng.standard_normal((4, 64)).astype(np.float32)
    up = rng.standard_normal((32, 4)).astype(np.float32)
    if nan:
        up[0, 0] = np.nan
    if zero:
        up[:] = 0
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
               f"{stem}.alpha": np.array(2.0, dtype=np.float32)}
    write_safetensors(path, tensors, metadata=metadata)
    return path, up.astype(np.float64) @ down.astype(np.float64) * 0.5


def test_inspect_json_record_matches_dense(tmp_path):
    path, dense = small_lora(tmp_path / "a.safetensors", metadata={"ss_network_dim": "4"})
    r = run("inspect", str(path), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["schema_version"] == "1.3"
    assert rec["format"]["id"] == "kohya"
    (layer,) = rec["layers"]
    ref = np.linalg.svd(dense, compute_uv=False)
    np.testing.assert_allclose(layer["spectrum"], ref[:4], rtol=1e-7)
    assert layer["fro"] == pytest.approx(np.linalg.norm(dense), rel=1e-7)
    assert layer["scale"] == 0.5 and layer["rank"] == 4 and layer["alpha"] == 2.0
    assert rec["blocks"][0]["id"] == "down.0"
    assert rec["blocks"][0]["strength"] == pytest.approx(np.linalg.norm(dense), rel=1e-7)
    assert rec["adapter"]["total_strength"] == pytest.approx(np.linalg.norm(dense), rel=1e-7)
    assert rec["adapter"]["max_spectral"] == pytest.approx(ref[0], rel=1e-7)
    assert rec["adapter"]["rank_histogram"] == {"4": 1} and rec["adapter"]["scale_histogram"] == {"0.5": 1}
    assert rec["format"]["recognised"] == rec["format"]["total"] == 3


def test_json_is_deterministic(tmp_path):
    path, _ = small_lora(tmp_path / "a.safetensors")
    outs = []
    for _ in range(2):
        r = run("inspect", str(path), "--json")
        d = json.loads(r.stdout)
        d.pop("timing")
        d["engine"].pop("seconds")
        outs.append(json.dumps(d, sort_keys=True))
    assert outs[0] == outs[1]


def test_exit_codes(tmp_path):
    good, _ = small_lora(tmp_path / "good.safetensors")
    nan, _ = small_lora(tmp_path / "nan.safetensors", nan=True)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1000) + b"{}")
    assert run("inspect", str(good)).returncode == 0
    r = run("inspect", str(nan), "--fail-on", "warning")
    assert r.returncode == 1 and "LA202" in r.stdout
    assert run("inspect", str(nan), "--fail-on", "warning", "--ignore", "LA202").returncode == 0
    assert run("inspect", str(nan), "--fail-on", "error").returncode == 0
    r = run("inspect", str(bad))
    assert r.returncode == 2 and "LA103" in r.stdout and "Traceback" not in r.stderr
    assert run("inspect", str(good), "--bogus").returncode == 3
    assert run("inspect").returncode == 3
    assert run("inspect", str(tmp_path / "missing.safetensors")).returncode == 3


def test_not_safetensors_inputs_get_coded_errors(tmp_path):
    import pickle

    cases = {
        "empty.safetensors": b"",
        "pickle.bin": pickle.dumps({"w": [1, 2, 3]}, protocol=2),
        "doc.json": b'{"a": 1}',
        "random.safetensors": np.random.default_rng(0).bytes(4096),
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        r = run("inspect", str(p), "--json")
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        rec = json.loads(r.stdout)
        assert rec["status"] == "error" and rec["error"]["code"].startswith("LA1"), name
        assert "Traceback" not in r.stderr
    r = run("inspect", str(tmp_path))  # a directory
    assert r.returncode == 2 and "LA100" in r.stdout


def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    r = run("inspect", str(fifo), "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "LA100"


def test_hostile_metadata_and_names_are_escaped_in_terminal(tmp_path):
    evil = "\x1b[2J\x1b[31mPWNED\x07 [bold red]markup[/] \u202egpj.exe"
    rng = np.random.default_rng(1)
    stem = "lora_unet_mid_block_attentions_0_proj_in\x1b[31m"
    tensors = {f"{stem}.lora_down.weight": rng.standard_normal((2, 8)).astype(np.float32),
               f"{stem}.lora_up.weight": rng.standard_normal((8, 2)).astype(np.float32)}
    path = tmp_path / "evil\x1b[31m.safetensors"
    write_safetensors(path, tensors, metadata={"ss_output_name": evil})
    r = run("inspect", str(path), "--layers")
    out = r.stdout + r.stderr
    assert "\x1b[2J" not in out and "\x07" not in out and "\u202e" not in out
    assert "\x1b[31mPWNED" not in out
    assert "\\x1b" in out  # shown escaped, not dropped
    r = run("inspect", str(path), "--json")
    rec = json.loads(r.stdout)
    assert rec["file"]["metadata"]["ss_output_name"] == evil  # the JSON keeps the exact value, escaped
    assert all(ord(c) < 128 for c in r.stdout)


def test_demo_runs(tmp_path):
    r = run("demo", "--out-dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((tmp_path / "demo" / "demo-sd15-kohya.json").read_text())
    assert rec["status"] == "ok" and rec["format"]["id"] == "kohya" and rec["layers"]


def test_inspect_does_not_import_torch_on_cpu(tmp_path):
    path, _ = small_lora(tmp_path / "a.safetensors")
    code = ("import sys, cli\n"
            "try:\n    cli.main(['inspect', sys.argv[1], '--json', '--device', 'auto'])\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'open_clip', 'scipy') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in r.stderr, r.stderr
