"""The same file through the numpy engine and the torch engine (the GPU code path, run on the CPU here)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from audit import corpus
from audit.analyse import Options, inspect_file

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("family,fmt,adapter", [
    ("sdxl", "kohya", "lora"), ("sd1", "kohya", "locon"), ("sd1", "kohya", "loha"),
    ("flux1", "diffusers-peft", "lora"), ("sd1", "kohya", "lokr"), ("sd1", "kohya", "oft"),
])
def test_numpy_and_torch_engines_agree(tmp_path, family, fmt, adapter):
    targets = "all" if adapter in ("locon", "loha", "lokr") else "attn"
    path = tmp_path / "x.safetensors"
    corpus.write(path, corpus.build(family, fmt, adapter=adapter, rank=4, targets=targets, max_modules=24))
    a = inspect_file(path, Options(device="cpu"))
    b = inspect_file(path, Options(device="cpu-torch"))
    assert a.engine.backend.startswith("numpy") and b.engine.backend.startswith("torch")
    assert [l.key for l in a.layers] == [l.key for l in b.layers]
    compared = 0
    for la, lb in zip(a.layers, b.layers):
        assert la.kind == lb.kind
        if la.spectrum:
            x, y = np.array(la.spectrum), np.array(lb.spectrum)
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-4 * x[0])  # the documented CPU/GPU agreement
            compared += 1
    assert compared > 0


def test_auto_device_without_gpu_is_cpu():
    from audit.spectra import resolve_device

    if os.path.exists("/dev/nvidia0"):
        pytest.skip("a GPU is present")
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("family,fmt", [("sdxl", "kohya"), ("flux1", "diffusers-peft"), ("sd3", "kohya"),
                                        ("sd2", "onetrainer"), ("flux1", "xlabs")])
def test_record_matches_planted_truth(tmp_path, family, fmt):
    """Every layer's spectrum and the file's total strength equal the generator's planted values."""
    synth = corpus.build(family, fmt, rank=6, dtype="F64", max_modules=60, seed=3)
    path = tmp_path / "x.safetensors"
    corpus.write(path, synth)
    rec = inspect_file(path, Options(device="cpu"))
    by_tensor = {n: t for t in synth.truth.values() for n in t.parts.values()}
    energy = 0.0
    for layer in rec.layers:
        truth = by_tensor[layer.tensors[0]]
        ref = np.asarray(truth.singular_values)
        got = np.array(layer.spectrum)
        np.testing.assert_allclose(got[: ref.size], ref, rtol=1e-9, atol=1e-12 * ref[0])
        assert np.all(got[ref.size:] <= 1e-9 * ref[0])
        assert layer.scale == pytest.approx(truth.scale)
        energy += float((ref**2).sum())
    assert len(rec.layers) == len(synth.truth)
    assert rec.adapter.total_strength == pytest.approx(np.sqrt(energy), rel=1e-9)
