"""The probe end to end on tiny models built in code (no weights, no network): plumbing, pairing, the CLI.

Skips when the probe's dependencies (torch, torchvision, diffusers, transformers, peft, open_clip_torch) are not
installed; the dev extras install them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")
pytest.importorskip("peft")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audit.probe import design, run, tiny  # noqa: E402

CLI = [sys.executable, "-c", "import cli; cli.main()"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("probe")
    tiny.write_sd_pipeline(root / "base")
    pipe = tiny.sd_pipeline(0)
    lora = tiny.write_sd_lora(pipe, root / "lora", scale=3.0, seed=1)
    null = tiny.write_sd_lora(pipe, root / "null", scale=0.0, seed=2)
    clip = tiny.write_open_clip(root / "clip")
    rng = np.random.default_rng(0)
    for name, colour in (("refs", (200, 60, 60)), ("ctl-a", (60, 60, 200)), ("ctl-b", (60, 200, 60))):
        (root / name).mkdir()
        for k in range(5):
            a = (np.array(colour) + rng.normal(0, 30, (64, 64, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(a).save(root / name / f"{k}.png")
        (root / name / "notes.txt").write_text("not an image")
    return root, lora, null, clip


def _cfg(world, lora, **kw):
    root, _, _, clip = world
    base = dict(base=str(root / "base"), lora=str(lora), refs=str(root / "refs"),
                controls=(str(root / "ctl-a"), str(root / "ctl-b")), quick=True, steps=3, size=64,
                clip_model=f"local-dir:{clip}", n_perm=2000, n_boot=300)
    base.update(kw)
    return run.ProbeConfig(**base)


def test_disabled_adapter_gives_the_base_images_and_batching_changes_nothing(world):
    root, lora, _, _ = world
    items = design.plan("style", quick=True)[:6]
    plain = run.load_base(str(root / "base"), family=None)
    import torch

    def direct(pipe, batch_size):
        out = []
        for s in range(0, len(items), batch_size):
            b = items[s:s + batch_size]
            with torch.no_grad():
                out += pipe([i.prompt for i in b], num_inference_steps=3, height=64, width=64, output_type="np",
                            generator=[torch.Generator("cpu").manual_seed(i.seed) for i in b]).images.tolist()
        return np.array(out)

    reference = direct(plain, 6)
    patched = run.load_base(str(root / "base"), family=None)
    n, found = run.apply_lora(patched, str(lora), expected_layers=32)
    assert n == 32 and found == []
    patched.disable_lora()
    np.testing.assert_array_equal(direct(patched, 6), reference)  # disabled: the base, bit for bit
    patched.enable_lora()
    on = direct(patched, 6)
    assert np.abs(on - reference).mean() > 1e-3  # the adapter changes the images
    np.testing.assert_allclose(direct(patched, 1), on, atol=1e-5)  # per-image generators: batch-invariant
    # run.generate toggles the adapter itself and pairs by seed: its disabled images are the reference's
    pil = run.generate(patched, items, lora=False, steps=3, guidance=None, size=64, batch_size=4)
    np.testing.assert_allclose(np.stack([np.asarray(im, dtype=np.float64) / 255 for im in pil]), reference,
                               atol=1 / 255)


def test_patched_layer_count_mismatch_is_a_finding(world):
    root, lora, _, _ = world
    pipe = run.load_base(str(root / "base"), family=None)
    n, found = run.apply_lora(pipe, str(lora), expected_layers=40)
    assert n == 32 and [f.code for f in found] == ["LA501"]


def test_null_adapter_is_not_detected(world):
    _, _, null, _ = world
    result = run.run_probe(_cfg(world, null))
    assert result.inputs["patched_layers"] == result.inputs["lora_layers"] == 32
    effect = result.arms["plain"]["effect"]
    assert effect["delta_mean"] == 0.0 and effect["n_pairs"] == 16
    assert result.verdict == "not_detected"
    assert set(result.inputs["controls"]) == {"ctl-a", "ctl-b"} and result.inputs["references"] == 5


def test_cli_probe_writes_record_report_and_contact_sheet(world, tmp_path):
    root, lora, _, clip = world
    out, page = tmp_path / "probe.json", tmp_path / "probe.html"
    r = subprocess.run([*CLI, "probe", "style", "--base", str(root / "base"), "--lora", str(lora), "--refs",
                        str(root / "refs"), "--controls", str(root / "ctl-a"), "--controls", str(root / "ctl-b"),
                        "--clip-model", f"local-dir:{clip}", "--quick", "--steps", "3", "--size", "64",
                        "--trigger", "zxq", "--out", str(out), "--html", str(page), "--no-progress"],
                       capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    record = json.loads(out.read_text())
    probe = record["probe"]
    assert r.returncode == (1 if probe["verdict"] == "captured" else 0), r.stderr
    assert probe["protocol"]["trigger"] == "zxq" and set(probe["arms"]) == {"trigger", "plain"}
    assert probe["primary_arm"] == "trigger" and probe["protocol"]["pairs"] == 32
    assert record["schema_version"] == "1.3"
    sheet = Path(probe["artifacts"]["contact_sheet"])
    assert sheet.is_file() and sheet.name == "probe-contact-sheet.png"
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.size[0] == 2 * 2 * 160 + 8
    text = page.read_text()
    assert "<h3>Probe: style</h3>" in text and 'src="data:image/jpeg;base64,' in text
    assert "img-src data:" in text and text.count("<img") == 1
    assert f"verdict: {probe['verdict']}" in r.stdout


def test_cli_probe_refuses_missing_clip_weights_and_bad_refs(world, tmp_path):
    root, lora, _, _ = world
    common = ["probe", "style", "--base", str(root / "base"), "--lora", str(lora), "--no-progress", "--quick"]
    r = subprocess.run([*CLI, *common, "--refs", str(root / "refs"), "--clip-model", "ViT-B-32"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "never downloads" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([*CLI, *common, "--refs", str(empty), "--clip-model", f"local-dir:{world[3]}"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no readable images" in r.stderr


def test_kohya_keys_patch_the_same_layers_with_the_same_effect(world, tmp_path):
    """diffusers converts kohya keys: the same LoRA in kohya form patches the same 32 layers and gives the same
    images as its diffusers-PEFT form."""
    root, lora, _, _ = world
    kohya = tiny.peft_to_kohya(lora, tmp_path / "kohya.safetensors")
    items = design.plan("style", quick=True)[:4]
    images = []
    for path in (kohya, lora):
        pipe = run.load_base(str(root / "base"), family=None)
        n, found = run.apply_lora(pipe, str(path), expected_layers=32)
        assert n == 32 and found == []
        images.append(np.stack([np.asarray(im) for im in run.generate(pipe, items, lora=True, steps=3,
                                                                        guidance=None, size=64, batch_size=4)]))
    np.testing.assert_array_equal(images[0], images[1])


def test_flux_pipeline_pairs_and_probe(world, tmp_path):
    """The same plumbing on a tiny FLUX pipeline: the transformer's adapter layers are all patched, the
    disabled adapter gives the base images bit for bit, and the probe runs end to end."""
    root, _, _, clip = world
    tiny.flux_pipeline(0).save_pretrained(str(tmp_path / "flux"))
    lora = tiny.write_flux_lora(tiny.flux_pipeline(0), tmp_path / "flux-lora", scale=3.0, seed=3)
    items = design.plan("style", quick=True)[:4]
    plain = run.load_base(str(tmp_path / "flux"), family=None)
    assert type(plain).__name__ == "FluxPipeline"
    import torch

    def direct(pipe):
        with torch.no_grad():
            return pipe([i.prompt for i in items], num_inference_steps=2, height=16, width=16, output_type="np",
                        generator=[torch.Generator("cpu").manual_seed(i.seed) for i in items]).images

    reference = direct(plain)
    n, found = run.apply_lora(plain, str(lora), expected_layers=7)
    assert n == 7 and found == []
    plain.disable_lora()
    np.testing.assert_array_equal(direct(plain), reference)
    plain.enable_lora()
    assert np.abs(direct(plain) - reference).mean() > 1e-3
    result = run.run_probe(run.ProbeConfig(base=str(tmp_path / "flux"), lora=str(lora), refs=str(root / "refs"),
                                           controls=(str(root / "ctl-a"),), quick=True, steps=2, size=16,
                                           clip_model=f"local-dir:{clip}", n_perm=1000, n_boot=200))
    assert result.protocol["pipeline"] == "FluxPipeline" and result.inputs["patched_layers"] == 7
    assert result.arms["plain"]["effect"]["n_pairs"] == 16
    assert result.verdict in ("captured", "not_detected", "inconclusive", "shifts_style_nonspecifically")
