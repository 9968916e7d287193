"""End to end over the real third-party files in ../shared/fixtures/real (skipped when absent).

Each file's format, adapter kinds and domain must match its MANIFEST reading, and the reported spectra and
norms must match a dense float64 reconstruction made here with the safetensors library, independently of
lora-audit's own reader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.analyse import Options, inspect_file
from conftest import real_fixtures_dir

REAL = real_fixtures_dir()
pytestmark = pytest.mark.skipif(not (REAL / "MANIFEST.json").is_file(), reason="shared fixtures not present")

# file -> (format id, {kind: layers}, domain, tensors)
EXPECTED = {
    "catundchat-sd15.safetensors": ("diffusers-legacy", {"lora": 128}, "diffusion", 256),
    "prushto-logo-sd15.safetensors": ("diffusers-legacy", {"lora": 128}, "diffusion", 256),
    "diffusers-pr-pokemon-sd15.safetensors": ("diffusers-legacy", {"lora": 128}, "diffusion", 256),
    "cloneofsimo-analog_svd_rank4.safetensors": ("cloneofsimo", {"lora": 192}, "diffusion", 384),
    "cloneofsimo-lora_disney.safetensors": ("cloneofsimo", {"lora": 192, "textual-inversion": 2}, "diffusion", 386),
    "cloneofsimo-lora_disney_inpainting.safetensors":
        ("cloneofsimo", {"lora": 192, "textual-inversion": 2}, "diffusion", 386),
    "lycoris-lokr-falcon4.safetensors": ("kohya", {"lokr": 350}, "diffusion", 1750),
    "lycoris-lokr-falcon8.safetensors": ("kohya", {"lokr": 350}, "diffusion", 1750),
    "lycoris-lokr-falcon16.safetensors": ("kohya", {"lokr": 350}, "diffusion", 1750),
    "sam-lora-rank2.safetensors": (None, None, "not-diffusion", 48),
    "sam-lora-rank16.safetensors": (None, None, "not-diffusion", 48),
    "lora-vit-lora.safetensors": (None, None, "not-diffusion", 24),
    "lora-vit-feb27.safetensors": (None, None, "not-diffusion", 24),
    "neg-peft-unilora-roberta.safetensors": (None, None, "not-a-lora", 1),
}


def test_every_manifest_file_is_covered():
    manifest = json.loads((REAL / "MANIFEST.json").read_text())
    assert {e["file"] for e in manifest["files"]} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_reads_as_manifest_says(name):
    fmt, kinds, domain, tensors = EXPECTED[name]
    rec = inspect_file(REAL / name, Options(device="cpu"))
    assert rec.status == "ok", rec.error
    assert rec.file.tensor_count == tensors
    assert rec.domain == domain
    assert rec.format.recognised + len(rec.format.unrecognised) == rec.format.total == tensors
    if fmt is not None:
        assert rec.format.id == fmt
        assert rec.adapter.kinds == kinds
        assert rec.format.recognised == tensors  # every tensor of a real LoRA is assigned to a layer
    if name.startswith("lycoris-lokr-falcon"):
        dim = int(name.split("falcon")[1].split(".")[0])
        assert rec.adapter.rank_histogram == {str(dim): 350}
        assert rec.file.metadata["ss_network_module"] == "lycoris.kohya"


def _dense_reference(path, layer) -> np.ndarray:
    """Dense float64 ΔW of one layer, rebuilt here from the safetensors library's arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        t = {n: f.get_tensor(n).astype(np.float64) for n in layer.tensors}
    by_suffix = {n.rsplit(".", 2)[-2] if n.endswith(".weight") else n.rsplit(".", 1)[-1]: a for n, a in t.items()}
    if layer.kind == "lokr":
        w1 = by_suffix["lokr_w1"] if "lokr_w1" in by_suffix else by_suffix["lokr_w1_a"] @ by_suffix["lokr_w1_b"]
        w2 = by_suffix["lokr_w2"] if "lokr_w2" in by_suffix else by_suffix["lokr_w2_a"] @ by_suffix["lokr_w2_b"]
        dense = np.kron(w1, w2.reshape(w2.shape[0], -1))
    else:  # a LoRA pair: whichever order multiplies through the small (rank) dimension
        a, b = (x.reshape(x.shape[0], -1) for x in t.values())
        orders = [(p, q) for p, q in ((a, b), (b, a)) if p.shape[1] == q.shape[0]]
        up, down = min(orders, key=lambda pq: pq[0].shape[1])
        dense = up @ down
    return layer.scale * dense


@pytest.mark.parametrize("name", ["catundchat-sd15.safetensors", "cloneofsimo-analog_svd_rank4.safetensors",
                                  "lycoris-lokr-falcon8.safetensors", "sam-lora-rank16.safetensors"])
def test_real_spectra_match_dense_float64(name):
    rec = inspect_file(REAL / name, Options(device="cpu"))
    layers = [l for l in rec.layers if l.kind in ("lora", "lokr") and l.spectral]
    sample = layers[:: max(1, len(layers) // 12)]
    assert len(sample) >= 10
    for layer in sample:
        dense = _dense_reference(REAL / name, layer)
        ref = np.linalg.svd(dense, compute_uv=False)
        got = np.array(layer.spectrum)
        np.testing.assert_allclose(got, ref[: got.size], rtol=1e-9, atol=1e-12 * ref[0])
        assert np.all(ref[got.size:] <= 1e-9 * ref[0])
        assert layer.fro == pytest.approx(np.linalg.norm(dense), rel=1e-9)
        assert layer.spectral == pytest.approx(ref[0], rel=1e-9)
