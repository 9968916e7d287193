"""audit/formats.py on the real third-party files in shared/fixtures/real (skipped when absent).

Keys, shapes and metadata are read with the reference safetensors library, independently of
audit/container.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import real_fixtures_dir

from audit.formats import TensorMeta, parse
from test_formats import check_invariants

REAL = real_fixtures_dir()
pytestmark = pytest.mark.skipif(not (REAL / "MANIFEST.json").is_file(), reason="real fixtures not present")


def load(name):
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(REAL / name), "np") as f:
        tensors = {}
        for k in f.keys():
            sl = f.get_slice(k)
            tensors[k] = TensorMeta(sl.get_dtype(), tuple(sl.get_shape()))
        return tensors, dict(f.metadata() or {})


def parsed(name):
    tensors, meta = load(name)
    res = parse(tensors, meta)
    check_invariants(res, tensors)
    return res, tensors, meta


def manifest_files():
    if not (REAL / "MANIFEST.json").is_file():
        return []
    return [e["file"] for e in json.loads((REAL / "MANIFEST.json").read_text())["files"]]


@pytest.mark.parametrize("name", manifest_files())
def test_every_real_file_is_fully_accounted_for(name):
    res, tensors, _ = parsed(name)
    assert res.total == len(tensors) > 0


@pytest.mark.parametrize("name", ["catundchat-sd15.safetensors", "prushto-logo-sd15.safetensors",
                                  "diffusers-pr-pokemon-sd15.safetensors"])
def test_diffusers_legacy_sd15(name):
    res, tensors, _ = parsed(name)
    assert res.format == "diffusers-legacy" and res.formats == {"diffusers-legacy": 256}
    assert res.total == res.recognised == 256 and not res.unrecognised
    assert len(res.groups) == 128 and {g.component for g in res.groups} == {"unet"}
    for g in res.groups:
        assert set(g.parts) == {"lora_down", "lora_up"}
        down, up = tensors[g.parts["lora_down"]].shape, tensors[g.parts["lora_up"]].shape
        assert down[0] == up[1] == 4  # rank 4 in every layer of these files
        assert re.search(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$", g.module)
        if g.module.endswith("attn2.to_k") or g.module.endswith("attn2.to_v"):
            assert down[1] == 768  # SD1 cross-attention context
    assert res.scale.convention == "unit" and res.domain_hint is None and not res.findings


def test_attention_processor_and_lora_dot_spellings_name_the_same_layers():
    # catundchat writes `….attn1.processor.to_out_lora.down.weight`, the diffusers PR file writes
    # `unet.….attn1.to_out.0.lora.down.weight`: both must land on the same 128 layer keys with equal shapes
    a, ta, _ = parsed("catundchat-sd15.safetensors")
    b, tb, _ = parsed("diffusers-pr-pokemon-sd15.safetensors")
    ga, gb = {g.key: g for g in a.groups}, {g.key: g for g in b.groups}
    assert set(ga) == set(gb)
    for key in ga:
        for role in ("lora_down", "lora_up"):
            assert ta[ga[key].parts[role]].shape == tb[gb[key].parts[role]].shape


@pytest.mark.parametrize("name,rank,tokens", [
    ("cloneofsimo-analog_svd_rank4.safetensors", 4, []),
    ("cloneofsimo-lora_disney.safetensors", 1, ["<s1>", "<s2>"]),
    ("cloneofsimo-lora_disney_inpainting.safetensors", 1, ["<s1>", "<s2>"]),
])
def test_cloneofsimo(name, rank, tokens):
    res, tensors, meta = parsed(name)
    assert res.format == "cloneofsimo" and not res.unrecognised
    assert res.formats == {"cloneofsimo": 384, **({"textual-inversion": len(tokens)} if tokens else {})}
    lora_groups = [g for g in res.groups if g.format == "cloneofsimo"]
    # the metadata lists one "<component>:<idx>:rank" entry per layer: the groups are exactly those layers
    declared = {k.rsplit(":", 1)[0] for k in meta if k.endswith(":rank")}
    declared = {k.replace("text_encoder:", "te:") for k in declared}
    assert {g.key for g in lora_groups} == declared and len(lora_groups) == 192
    assert sum(g.component == "te" for g in lora_groups) == 48
    for g in lora_groups:
        assert tensors[g.parts["lora_down"]].shape[0] == tensors[g.parts["lora_up"]].shape[1] == rank
    emb = [g for g in res.groups if g.component == "embedding"]
    assert sorted(g.module for g in emb) == tokens and res.embeddings == len(tokens)
    for g in emb:
        assert g.parts == {"embedding": g.module} and tensors[g.module].shape == (768,)
    assert not [f for f in res.findings if f.code == "LA211"]  # declared ranks agree with the factors
    assert res.scale.convention == "unit"


@pytest.mark.parametrize("name,dim", [("lycoris-lokr-falcon4.safetensors", 4),
                                      ("lycoris-lokr-falcon8.safetensors", 8),
                                      ("lycoris-lokr-falcon16.safetensors", 16)])
def test_lycoris_lokr_kohya(name, dim):
    res, tensors, meta = parsed(name)
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert res.format == "kohya" and res.total == res.recognised == 1750 and not res.unrecognised
    assert len(res.groups) == 350
    assert sum(g.component == "te" for g in res.groups) == 72  # 12 CLIP layers x 6 linears
    assert sum(g.component == "unet" for g in res.groups) == 278
    for g in res.groups:
        assert set(g.parts) == {"alpha", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"}
        assert tensors[g.parts["lokr_w2_b"]].shape[0] == dim
    assert res.scale.convention == "kohya" and res.domain_hint is None and not res.findings


@pytest.mark.parametrize("name,rank", [("sam-lora-rank2.safetensors", 2), ("sam-lora-rank16.safetensors", 16)])
def test_sam_lora_is_not_diffusion(name, rank):
    res, tensors, _ = parsed(name)
    assert res.domain_hint == "not-diffusion" and res.format == "unknown"
    assert len(res.groups) == 24 and {g.component for g in res.groups} == {"vision"}
    for g in res.groups:
        assert tensors[g.parts["lora_down"]].shape == (rank, 768)
        assert tensors[g.parts["lora_up"]].shape == (768, rank)


@pytest.mark.parametrize("name,role", [("lora-vit-lora.safetensors", "lora_down"),
                                       ("lora-vit-feb27.safetensors", "lora_up")])
def test_lora_vit_is_not_diffusion(name, role):
    res, tensors, _ = parsed(name)
    assert res.domain_hint == "not-diffusion" and len(res.groups) == 24
    for g in res.groups:
        shape = tensors[g.parts[role]].shape
        assert list(g.parts) == [role] and min(shape) == 4  # the small dim is the rank whichever way round


def test_peft_unilora_is_not_a_lora():
    res, _, _ = parsed("neg-peft-unilora-roberta.safetensors")
    assert res.domain_hint == "not-a-lora" and res.unrecognised == ["base_model.unilora_theta_d"]
    assert not res.groups and res.format == "unknown"
    assert [f.code for f in res.findings] == ["LA201"]
