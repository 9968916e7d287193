"""Key-format recognition and layer grouping (audit/formats.py) on realistic key sets.

Module names and shapes below are written from the key catalogue (shared/reference/formats.md §2-§4):
sd-scripts SGM names for SDXL, BFL names for FLUX, MMDiT names for SD3, diffusers names for PEFT-era files.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.adapters.base import ROLES
from audit.formats import (
    COMPONENTS,
    FORMAT_IDS,
    FormatResult,
    TensorMeta,
    parse,
    parse_json_bounded,
)


def T(*shape, dtype="F16"):
    return TensorMeta(dtype, tuple(shape))


def lora(prefix, module, r, i, o, sep=".", style="kohya", alpha=True, conv=None):
    """Keys of one LoRA layer in a given spelling."""
    out = {}
    down = (r, i) if conv is None else (r, i, conv, conv)
    up = (o, r) if conv is None else (o, r, 1, 1)
    base = f"{prefix}{module}"
    if style == "kohya":
        out[f"{base}.lora_down.weight"] = T(*down)
        out[f"{base}.lora_up.weight"] = T(*up)
        if alpha:
            out[f"{base}.alpha"] = T()
    elif style == "peft":
        out[f"{base}.lora_A.weight"] = T(*down)
        out[f"{base}.lora_B.weight"] = T(*up)
        if alpha:
            out[f"{base}.alpha"] = T()
    else:
        raise AssertionError(style)
    return out


def check_invariants(res: FormatResult, tensors):
    """What must hold for every parse: full coverage, no tensor twice, valid ids."""
    assert res.total == len(tensors)
    assert res.recognised + len(res.unrecognised) == res.total
    in_groups = [n for g in res.groups for n in g.parts.values()]
    assert len(in_groups) == res.recognised
    assert len(set(in_groups)) == len(in_groups)
    assert set(in_groups).isdisjoint(res.unrecognised)
    assert set(in_groups) | set(res.unrecognised) == set(tensors)
    assert res.unrecognised == sorted(res.unrecognised)
    assert sum(res.formats.values()) == res.recognised
    assert res.format in FORMAT_IDS
    assert set(res.formats) <= set(FORMAT_IDS)
    keys = [g.key for g in res.groups]
    assert len(set(keys)) == len(keys)
    for g in res.groups:
        assert g.key == f"{g.component}:{g.module}"
        assert g.component in COMPONENTS
        assert g.format in FORMAT_IDS
        assert g.parts and set(g.parts) <= ROLES
    assert res.embeddings == sum(1 for g in res.groups if g.format == "textual-inversion")
    if res.unrecognised:
        la201 = [f for f in res.findings if f.code == "LA201"]
        assert len(la201) == 1 and str(len(res.unrecognised)) in la201[0].message
    else:
        assert not [f for f in res.findings if f.code == "LA201"]


def by_key(res):
    return {g.key: g for g in res.groups}


# ---------------------------------------------------------------------------------------------------------
# kohya


def sdxl_kohya(r=8):
    t = {}
    t |= lora("lora_unet_", "input_blocks_4_1_transformer_blocks_0_attn1_to_q", r, 640, 640)
    t |= lora("lora_unet_", "input_blocks_4_1_transformer_blocks_0_attn2_to_k", r, 2048, 640)
    t |= lora("lora_unet_", "middle_block_1_transformer_blocks_9_ff_net_0_proj", r, 1280, 10240)
    t |= lora("lora_unet_", "output_blocks_0_1_transformer_blocks_0_attn1_to_out_0", r, 1280, 1280)
    t |= lora("lora_unet_", "input_blocks_1_0_in_layers_2", r, 320, 320, conv=3)  # LoCon
    t |= lora("lora_unet_", "out_2", r, 320, 4, conv=3)
    t |= lora("lora_te1_", "text_model_encoder_layers_0_self_attn_q_proj", r, 768, 768)
    t |= lora("lora_te2_", "text_model_encoder_layers_31_mlp_fc1", r, 1280, 5120)
    return t


def test_kohya_sdxl():
    t = sdxl_kohya()
    res = parse(t, {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"})
    check_invariants(res, t)
    assert res.format == "kohya" and res.formats == {"kohya": 24}
    assert len(res.groups) == 8 and not res.unrecognised
    g = by_key(res)
    assert g["unet:input_blocks_4_1_transformer_blocks_0_attn1_to_q"].parts == {
        "lora_down": "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
        "lora_up": "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight",
        "alpha": "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha",
    }
    # SGM `out_2` has no UNet marker of its own; the other UNet names decide the component
    assert g["unet:out_2"].component == "unet"
    assert g["te1:text_model_encoder_layers_0_self_attn_q_proj"].component == "te1"
    assert g["te2:text_model_encoder_layers_31_mlp_fc1"].component == "te2"
    assert {x.component for x in res.groups} == {"unet", "te1", "te2"}
    assert res.scale.convention == "kohya" and res.scale.source == "per-module alpha tensors"
    assert res.domain_hint is None and res.embeddings == 0 and not res.findings


def test_kohya_sd1_te_and_no_alpha():
    t = {}
    t |= lora("lora_unet_", "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 4, 768, 320, alpha=False)
    t |= lora("lora_unet_", "down_blocks_0_attentions_0_proj_in", 4, 320, 320, conv=1, alpha=False)
    t |= lora("lora_te_", "text_model_encoder_layers_11_self_attn_out_proj", 4, 768, 768, alpha=False)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "kohya" and len(res.groups) == 3
    assert {g.component for g in res.groups} == {"unet", "te"}
    assert all(set(g.parts) == {"lora_down", "lora_up"} for g in res.groups)
    assert res.scale.convention == "kohya" and "scale 1" in res.scale.source


def flux_kohya(r=16, down_rows=None, up_cols=None):
    t = {}
    dr = down_rows or r
    uc = up_cols or r
    t["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = T(dr, 3072)
    t["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = T(9216, uc)
    t["lora_unet_double_blocks_0_img_attn_qkv.alpha"] = T()
    t |= lora("lora_unet_", "double_blocks_0_img_attn_proj", r, 3072, 3072)
    t |= lora("lora_unet_", "double_blocks_18_txt_mlp_0", r, 3072, 12288)
    t |= lora("lora_unet_", "single_blocks_37_linear2", r, 15360, 3072)
    t |= lora("lora_te1_", "text_model_encoder_layers_0_self_attn_q_proj", r, 768, 768)
    t |= lora("lora_te3_", "encoder_block_0_layer_0_SelfAttention_q", r, 4096, 4096)
    return t


def test_kohya_flux():
    t = flux_kohya()
    res = parse(t, {"ss_network_module": "networks.lora_flux"})
    check_invariants(res, t)
    assert res.format == "kohya" and len(res.groups) == 6 and res.recognised == 18
    g = by_key(res)
    # a DiT under lora_unet_ is a transformer, not a UNet
    assert g["transformer:double_blocks_0_img_attn_qkv"].parts["lora_up"].endswith("lora_up.weight")
    assert g["transformer:single_blocks_37_linear2"].component == "transformer"
    assert g["te3:encoder_block_0_layer_0_SelfAttention_q"].component == "te3"
    assert not [f for f in res.findings if f.code == "LA213"]


def test_kohya_flux_split_qkv_declared_is_la213():
    t = flux_kohya(r=16, down_rows=48, up_cols=48)
    res = parse(t, {"ss_network_args": json.dumps({"split_qkv": "True", "train_blocks": "all"})})
    check_invariants(res, t)
    la213 = [f for f in res.findings if f.code == "LA213"]
    assert len(la213) == 1 and "1 layer" in la213[0].message
    assert "transformer:double_blocks_0_img_attn_qkv" in la213[0].message
    assert la213[0].severity == "info"
    # same shapes without the declaration: nothing distinguishes it from a rank-48 LoRA
    assert not [f for f in parse(t).findings if f.code == "LA213"]


def test_kohya_flux_unequal_rank_chunks_is_la213():
    t = flux_kohya(r=16, down_rows=48, up_cols=16)
    res = parse(t)
    la213 = [f for f in res.findings if f.code == "LA213"]
    assert len(la213) == 1 and "3 or 4 times" in la213[0].message


def test_kohya_sd3_and_zimage_double_underscore():
    t = {}
    t |= lora("lora_unet_", "joint_blocks_0_x_block_attn_qkv", 8, 1536, 4608)
    t |= lora("lora_unet_", "joint_blocks_23_context_block_mlp_fc1", 8, 1536, 6144)
    res = parse(t)
    check_invariants(res, t)
    assert set(by_key(res)) == {"transformer:joint_blocks_0_x_block_attn_qkv",
                                "transformer:joint_blocks_23_context_block_mlp_fc1"}
    z = lora("lora_unet_", "_layers_0_attention_to_k", 8, 3840, 3840)
    res = parse(z)
    check_invariants(res, z)
    assert [g.key for g in res.groups] == ["transformer:layers_0_attention_to_k"]
    assert res.format == "kohya"


LYCORIS_KINDS = {
    # role set -> tensors (suffix: shape)
    "loha": {"hada_w1_a": (320, 4), "hada_w1_b": (4, 320), "hada_w2_a": (320, 4), "hada_w2_b": (4, 320),
             "alpha": ()},
    "loha_tucker": {"hada_w1_a": (4, 320), "hada_w1_b": (4, 320), "hada_w2_a": (4, 320), "hada_w2_b": (4, 320),
                    "hada_t1": (4, 4, 3, 3), "hada_t2": (4, 4, 3, 3), "alpha": ()},
    "lokr": {"lokr_w1": (16, 20), "lokr_w2_a": (20, 4), "lokr_w2_b": (4, 16), "alpha": ()},
    "lokr_full": {"lokr_w1": (16, 20), "lokr_w2": (20, 16)},
    "lokr_tucker": {"lokr_w1_a": (16, 2), "lokr_w1_b": (2, 20), "lokr_w2_a": (4, 20), "lokr_w2_b": (4, 16),
                    "lokr_t2": (4, 4, 3, 3), "alpha": ()},
    "ia3": {"weight": (320,), "on_input": ()},
    "oft": {"oft_blocks": (4, 80, 80), "rescale": (320, 1), "alpha": ()},
    "boft": {"oft_blocks": (2, 4, 80, 80), "alpha": ()},
    "glora": {"a1.weight": (320, 4), "a2.weight": (4, 320), "b1.weight": (320, 4), "b2.weight": (4, 320),
              "alpha": ()},
    "full": {"diff": (320, 320), "diff_b": (320,)},
    "norm": {"w_norm": (320,), "b_norm": (320,)},
    "tucker": {"lora_down.weight": (4, 320, 1, 1), "lora_mid.weight": (4, 4, 3, 3),
               "lora_up.weight": (320, 4, 1, 1), "alpha": ()},
    "dora": {"lora_down.weight": (4, 320), "lora_up.weight": (320, 4), "dora_scale": (320, 1), "alpha": ()},
    "sparse_bias": {"lora_down.weight": (4, 320), "lora_up.weight": (320, 4), "bias_indices": (2, 10),
                    "bias_values": (10,), "bias_size": (2,)},
}
EXPECTED_ROLE = {"a1.weight": "a1", "a2.weight": "a2", "b1.weight": "b1", "b2.weight": "b2",
                 "lora_down.weight": "lora_down", "lora_up.weight": "lora_up", "lora_mid.weight": "lora_mid"}


@pytest.mark.parametrize("kind", sorted(LYCORIS_KINDS))
def test_kohya_lycoris_roles(kind):
    module = "down_blocks_1_attentions_0_proj_in"
    t = {f"lora_unet_{module}.{suf}": T(*shape) for suf, shape in LYCORIS_KINDS[kind].items()}
    t |= lora("lora_te_", "text_model_encoder_layers_0_mlp_fc1", 4, 768, 3072)
    res = parse(t, {"ss_network_module": "lycoris.kohya"})
    check_invariants(res, t)
    assert res.format == "kohya" and not res.unrecognised and len(res.groups) == 2
    g = by_key(res)[f"unet:{module}"]
    assert set(g.parts) == {EXPECTED_ROLE.get(s, s) for s in LYCORIS_KINDS[kind]}
    assert g.format == "kohya"


def test_ia3_weight_needs_on_input():
    # a bare `.weight` without `on_input` is a plain model weight, never an IA3 vector
    t = {"lora_unet_down_blocks_0_resnets_0_conv1.weight": T(320, 320, 3, 3)}
    t |= lora("lora_unet_", "down_blocks_0_attentions_0_proj_in", 4, 320, 320)
    res = parse(t)
    check_invariants(res, t)
    assert res.unrecognised == ["lora_unet_down_blocks_0_resnets_0_conv1.weight"]
    assert len(res.groups) == 1


# ---------------------------------------------------------------------------------------------------------
# diffusers / PEFT


def flux_diffusers(r=16, prefix="transformer.", te=True):
    t = {}
    t |= lora(prefix, "single_transformer_blocks.0.attn.to_q", r, 3072, 3072, style="peft", alpha=False)
    t |= lora(prefix, "single_transformer_blocks.37.proj_out", r, 15360, 3072, style="peft", alpha=False)
    t |= lora(prefix, "transformer_blocks.0.attn.add_q_proj", r, 3072, 3072, style="peft", alpha=False)
    t |= lora(prefix, "transformer_blocks.18.ff.net.0.proj", r, 3072, 12288, style="peft", alpha=False)
    if te:
        t |= lora("text_encoder.", "text_model.encoder.layers.0.self_attn.q_proj", r, 768, 768, style="peft",
                  alpha=False)
    return t


def test_diffusers_peft_flux():
    t = flux_diffusers()
    res = parse(t, {"format": "pt"})
    check_invariants(res, t)
    assert res.format == "diffusers-peft" and len(res.groups) == 5 and not res.unrecognised
    g = by_key(res)
    grp = g["transformer:single_transformer_blocks.0.attn.to_q"]
    assert grp.parts == {"lora_down": "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
                         "lora_up": "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"}
    assert g["te:text_model.encoder.layers.0.self_attn.q_proj"].component == "te"
    assert res.scale.convention == "peft" and res.scale.lora_alpha is None
    assert "scale 1" in res.scale.source


def test_diffusers_peft_sdxl_two_text_encoders_and_dora():
    t = {}
    t |= lora("unet.", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 8, 2048, 640, style="peft",
              alpha=False)
    t["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_magnitude_vector"] = T(640)
    t |= lora("text_encoder.", "text_model.encoder.layers.0.self_attn.k_proj", 8, 768, 768, style="peft",
              alpha=False)
    t |= lora("text_encoder_2.", "text_model.encoder.layers.31.self_attn.k_proj", 8, 1280, 1280, style="peft",
              alpha=False)
    res = parse(t)
    check_invariants(res, t)
    g = by_key(res)
    assert set(g) == {"unet:down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                      "te1:text_model.encoder.layers.0.self_attn.k_proj",
                      "te2:text_model.encoder.layers.31.self_attn.k_proj"}
    assert g["unet:down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"].parts["dora_scale"].endswith(
        "lora_magnitude_vector")
    assert res.format == "diffusers-peft"


@pytest.mark.parametrize("down,up", [
    ("lora_A.default.weight", "lora_B.default.weight"),  # PEFT adapter name left in (Qwen)
    ("lora_A.my_style.weight", "lora_B.my_style.weight"),
    ("lora_A", "lora_B"),  # Mochi: no .weight
])
def test_diffusers_peft_spelling_variants(down, up):
    t = {f"transformer.transformer_blocks.0.attn.to_q.{down}": T(16, 3072),
         f"transformer.transformer_blocks.0.attn.to_q.{up}": T(3072, 16)}
    res = parse(t)
    check_invariants(res, t)
    assert [g.key for g in res.groups] == ["transformer:transformer_blocks.0.attn.to_q"]
    assert set(res.groups[0].parts) == {"lora_down", "lora_up"} and res.format == "diffusers-peft"


def test_two_spellings_of_one_part_collide_into_unrecognised():
    t = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": T(16, 3072),
         "transformer.transformer_blocks.0.attn.to_q.lora_A.default.weight": T(16, 3072),
         "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": T(3072, 16)}
    res = parse(t)
    check_invariants(res, t)
    assert len(res.groups) == 1 and len(res.unrecognised) == 1


def test_diffusers_lora_adapter_metadata_prefixed():
    t = flux_diffusers()
    meta = {
        "transformer.r": 16, "transformer.lora_alpha": 32, "transformer.use_rslora": False,
        "transformer.rank_pattern": {"proj_out": 16}, "transformer.alpha_pattern": {"attn.add_q_proj": 8},
        "text_encoder.r": 16, "text_encoder.lora_alpha": 4,
    }
    res = parse(t, {"lora_adapter_metadata": json.dumps(meta, indent=2, sort_keys=True)})
    check_invariants(res, t)
    s = res.scale
    assert s.convention == "peft" and s.lora_alpha == 32.0 and s.r == 16 and s.use_rslora is False
    assert s.source == "metadata:lora_adapter_metadata (transformer)"
    assert s.rank_pattern["proj_out"] == 16 and s.alpha_pattern["attn.add_q_proj"] == 8.0
    # the text encoder's own lora_alpha is carried as an exact-module entry
    assert s.alpha_pattern["text_model.encoder.layers.0.self_attn.q_proj"] == 4.0
    assert s.rank_pattern["text_model.encoder.layers.0.self_attn.q_proj"] == 16


def test_peft_metadata_unprefixed_rslora():
    t = {}
    t |= lora("base_model.model.", "transformer_blocks.0.attn.to_q", 8, 3072, 3072, style="peft", alpha=False)
    t |= lora("base_model.model.", "transformer_blocks.59.img_mlp.net.2", 8, 12288, 3072, style="peft",
              alpha=False)
    cfg = {"r": 8, "lora_alpha": 16, "use_rslora": True, "peft_type": "LORA",
           "target_modules": ["to_q", "net.2"], "rank_pattern": {}, "alpha_pattern": {}}
    res = parse(t, {"lora_adapter_metadata": json.dumps(cfg)})
    check_invariants(res, t)
    assert res.format == "peft" and {g.component for g in res.groups} == {"transformer"}
    assert res.scale.lora_alpha == 16.0 and res.scale.r == 8 and res.scale.use_rslora is True
    assert res.scale.source == "metadata:lora_adapter_metadata"
    assert res.domain_hint is None


@pytest.mark.parametrize("bad", [
    "[" * 100000 + "]" * 100000,  # nesting attack
    '{"r": NaN, "lora_alpha": 1}',  # non-standard constant
    '{"r": 4, "r": 8}',  # duplicate key
    '{"r": 4',  # truncated
    "x" * (2 << 20),  # larger than the cap
])
def test_lora_adapter_metadata_bounded(bad):
    t = flux_diffusers(te=False)
    res = parse(t, {"lora_adapter_metadata": bad})
    check_invariants(res, t)
    assert res.scale.convention == "peft" and res.scale.lora_alpha is None and res.scale.r is None
    assert [f.code for f in res.findings] == ["LA159"]


def test_secondary_component_patterns_resolve_longest_suffix_and_scale():
    t = flux_diffusers()
    t |= lora("text_encoder.", "text_model.encoder.layers.1.self_attn.q_proj", 16, 768, 768, style="peft",
              alpha=False)
    many = {f"layers.{i}.mlp.fc{i}": 2 for i in range(20000)}  # a large pattern table stays cheap
    meta = {"transformer.r": 16, "transformer.lora_alpha": 16,
            "text_encoder.r": 16, "text_encoder.lora_alpha": 8,
            "text_encoder.alpha_pattern": {"q_proj": 2, "layers.1.self_attn.q_proj": 5, **many}}
    t0 = time.perf_counter()
    res = parse(t, {"lora_adapter_metadata": json.dumps(meta)})
    assert time.perf_counter() - t0 < 1.0
    ap = res.scale.alpha_pattern
    assert ap["text_model.encoder.layers.0.self_attn.q_proj"] == 2.0  # only `q_proj` matches
    assert ap["text_model.encoder.layers.1.self_attn.q_proj"] == 5.0  # the longer suffix wins
    assert res.scale.lora_alpha == 16.0 and not res.findings


def test_metadata_pattern_keys_are_literal():
    t = flux_diffusers(te=False)
    meta = {"r": 16, "lora_alpha": 16, "alpha_pattern": {"(.*": 3, "to_q": "bad", "to_k": True}}
    res = parse(t, {"lora_adapter_metadata": json.dumps(meta)})
    assert res.scale.alpha_pattern == {"(.*": 3.0}  # non-numbers and booleans dropped, key kept verbatim


def test_peft_llm_is_not_diffusion():
    t = {}
    for i in range(2):
        for proj, (i_, o) in {"q_proj": (4096, 4096), "v_proj": (4096, 1024)}.items():
            t |= lora("base_model.model.", f"model.layers.{i}.self_attn.{proj}", 8, i_, o, style="peft", alpha=False)
    t |= lora("base_model.model.", "model.layers.0.mlp.gate_proj", 8, 4096, 14336, style="peft", alpha=False)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "peft" and len(res.groups) == 5
    assert res.domain_hint == "not-diffusion" and "language-model" in res.domain_reason


def test_peft_roberta_is_not_diffusion_but_hunyuan_dit_is_diffusion():
    t = lora("base_model.model.", "roberta.encoder.layer.0.attention.self.query", 8, 768, 768, style="peft",
             alpha=False)
    assert parse(t).domain_hint == "not-diffusion"
    h = {}
    h |= lora("base_model.model.", "blocks.0.attn1.Wqkv", 8, 1408, 4224, style="peft", alpha=False)
    h |= lora("base_model.model.", "blocks.39.attn2.q_proj", 8, 1408, 1408, style="peft", alpha=False)
    res = parse(h)
    check_invariants(res, h)
    assert res.format == "peft" and res.domain_hint is None


def test_peft_ia3_and_loha():
    t = {"base_model.model.transformer_blocks.0.attn.to_k.ia3_l": T(3072, 1),
         "base_model.model.transformer_blocks.0.attn.to_q.hada_w1_a": T(3072, 8),
         "base_model.model.transformer_blocks.0.attn.to_q.hada_w1_b": T(8, 3072),
         "base_model.model.transformer_blocks.0.attn.to_q.hada_w2_a": T(3072, 8),
         "base_model.model.transformer_blocks.0.attn.to_q.hada_w2_b": T(8, 3072)}
    res = parse(t)
    check_invariants(res, t)
    g = by_key(res)
    assert set(g["transformer:transformer_blocks.0.attn.to_k"].parts) == {"weight"}
    assert set(g["transformer:transformer_blocks.0.attn.to_q"].parts) == {"hada_w1_a", "hada_w1_b", "hada_w2_a",
                                                                          "hada_w2_b"}
    assert res.format == "peft"


# ---------------------------------------------------------------------------------------------------------
# diffusers legacy


def test_diffusers_legacy_attn_processor_with_unet_prefix_and_te():
    t = {}
    base = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
    for proj in ("to_q", "to_k", "to_v", "to_out"):
        t[f"{base}.{proj}_lora.down.weight"] = T(4, 320, dtype="F32")
        t[f"{base}.{proj}_lora.up.weight"] = T(320, 4, dtype="F32")
    te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer"
    t[f"{te}.down.weight"] = T(4, 768, dtype="F32")
    t[f"{te}.up.weight"] = T(768, 4, dtype="F32")
    res = parse(t, {"format": "pt"})
    check_invariants(res, t)
    assert res.format == "diffusers-legacy" and len(res.groups) == 5 and not res.unrecognised
    keys = set(by_key(res))
    m = "unet:down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    assert {f"{m}.to_q", f"{m}.to_k", f"{m}.to_v", f"{m}.to_out.0"} <= keys
    assert "te:text_model.encoder.layers.0.self_attn.q_proj" in keys
    assert res.scale.convention == "unit"


def test_diffusers_legacy_lora_dot_down_with_alpha_is_kohya_scale():
    t = {"unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": T(4, 768),
         "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight": T(1280, 4)}
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "diffusers-legacy" and res.scale.convention == "unit"
    t["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.alpha"] = T()
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "diffusers-legacy" and res.scale.convention == "kohya"
    assert set(res.groups[0].parts) == {"lora_down", "lora_up", "alpha"}


# ---------------------------------------------------------------------------------------------------------
# FLUX-only layouts: xlabs, BFL control, comfy-native, ai-toolkit


def test_xlabs():
    t = {}
    for i in (0, 18):
        for proj, (i_, o) in {"qkv": (3072, 9216), "proj": (3072, 3072)}.items():
            for stream in (1, 2):
                base = f"double_blocks.{i}.processor.{proj}_lora{stream}"
                t[f"{base}.down.weight"] = T(16, i_, dtype="BF16")
                t[f"{base}.up.weight"] = T(o, 16, dtype="BF16")
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "xlabs" and len(res.groups) == 8 and not res.unrecognised
    g = by_key(res)
    assert g["transformer:double_blocks.0.img_attn.qkv"].parts == {
        "lora_down": "double_blocks.0.processor.qkv_lora1.down.weight",
        "lora_up": "double_blocks.0.processor.qkv_lora1.up.weight"}
    assert "transformer:double_blocks.18.txt_attn.proj" in g
    assert res.scale.convention == "unit"


def test_bfl_control_lora():
    t = {}
    for mod, (i, o) in {"img_in": (128, 3072), "double_blocks.0.img_attn.qkv": (3072, 9216),
                        "single_blocks.0.linear1": (3072, 21504)}.items():
        t[f"{mod}.lora_A.weight"] = T(128, i, dtype="BF16")
        t[f"{mod}.lora_B.weight"] = T(o, 128, dtype="BF16")
        t[f"{mod}.lora_B.bias"] = T(o, dtype="BF16")
    t["double_blocks.0.img_attn.norm.query_norm.scale"] = T(128, dtype="BF16")
    t["double_blocks.0.img_attn.norm.key_norm.scale"] = T(128, dtype="BF16")
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "bfl-control" and res.formats == {"bfl-control": 11}
    g = by_key(res)
    assert g["transformer:img_in"].parts == {"lora_down": "img_in.lora_A.weight", "lora_up": "img_in.lora_B.weight",
                                             "lora_up_bias": "img_in.lora_B.bias"}
    assert g["transformer:double_blocks.0.img_attn.norm.query_norm"].parts == {
        "set_weight": "double_blocks.0.img_attn.norm.query_norm.scale"}
    assert len(res.groups) == 5 and res.scale.convention == "unit"


def test_norm_scales_of_a_checkpoint_are_not_adapter_layers():
    t = {"double_blocks.0.img_attn.norm.query_norm.scale": T(128),
         "double_blocks.0.img_attn.qkv.weight": T(9216, 3072),
         "double_blocks.0.img_attn.qkv.bias": T(9216)}
    res = parse(t)
    check_invariants(res, t)
    assert not res.groups and res.format == "unknown"
    assert res.domain_hint == "not-a-lora"


def test_comfy_native_wan_and_text_encoders():
    t = {}
    t |= lora("diffusion_model.", "blocks.0.self_attn.q", 32, 5120, 5120)
    t |= lora("diffusion_model.", "blocks.39.ffn.2", 32, 13824, 5120)
    t |= lora("text_encoders.", "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj", 8, 768, 768)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "comfy-native" and len(res.groups) == 3
    g = by_key(res)
    assert g["transformer:blocks.0.self_attn.q"].format == "comfy-native"
    assert "te1:clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj" in g
    assert res.scale.convention == "kohya"


def test_comfy_native_lokr_and_sgm_unet():
    t = {"diffusion_model.double_blocks.0.img_attn.qkv.lokr_w1": T(4, 4),
         "diffusion_model.double_blocks.0.img_attn.qkv.lokr_w2": T(2304, 768)}
    t |= lora("model.diffusion_model.", "input_blocks.4.1.transformer_blocks.0.attn2.to_k", 8, 2048, 640)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "comfy-native"
    # one prefix, one denoiser: the SGM names make this prefix a UNet
    assert {g.component for g in res.groups} == {"unet"}


def test_ai_toolkit_by_keys():
    t = {}
    t |= lora("diffusion_model.", "double_blocks.0.img_attn.qkv", 16, 3072, 9216, style="peft", alpha=False)
    t |= lora("diffusion_model.", "single_blocks.37.linear2", 16, 15360, 3072, style="peft", alpha=False)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "ai-toolkit" and len(res.groups) == 2
    assert res.scale.convention == "unit"
    # the same spelling with alpha tensors is ComfyUI's own format
    t |= {"diffusion_model.double_blocks.0.img_attn.qkv.alpha": T()}
    assert parse(t).format == "comfy-native"


def test_ai_toolkit_by_software_metadata():
    t = flux_diffusers(te=False)
    meta = {"software": json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit",
                                    "version": "0.1.0"}), "format": "pt", "ss_base_model_version": "flux.1"}
    res = parse(t, meta)
    check_invariants(res, t)
    assert res.format == "ai-toolkit" and {g.format for g in res.groups} == {"ai-toolkit"}
    assert res.scale.convention == "unit"
    # an SD LoRA saved by ai-toolkit in kohya spelling keeps its alpha convention
    s = sdxl_kohya()
    res = parse(s, meta)
    assert res.format == "ai-toolkit" and res.scale.convention == "kohya"
    # a software field naming another tool changes nothing
    assert parse(t, {"software": json.dumps({"name": "other"})}).format == "diffusers-peft"


# ---------------------------------------------------------------------------------------------------------
# SimpleTuner LyCORIS, OneTrainer


def test_simpletuner_lycoris():
    t = {}
    for i in range(2):
        base = f"lycoris_transformer_blocks_{i}_attn_to_qkv"
        t[f"{base}.lokr_w1"] = T(8, 8)
        t[f"{base}.lokr_w2_a"] = T(2304, 16)
        t[f"{base}.lokr_w2_b"] = T(16, 384)
        t[f"{base}.alpha"] = T()
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "simpletuner-lycoris" and len(res.groups) == 2
    assert by_key(res)["transformer:transformer_blocks_0_attn_to_qkv"].parts["lokr_w1"].endswith(".lokr_w1")
    assert res.scale.convention == "kohya"
    u = lora("lycoris_", "down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 8, 2048, 640)
    assert parse(u).groups[0].component == "unet"


def test_onetrainer_transformer_prefix_with_dora():
    t = {}
    for m, (i, o) in {"single_transformer_blocks_0_attn_to_k": (3072, 3072),
                      "transformer_blocks_0_ff_net_0_proj": (3072, 12288)}.items():
        t |= lora("lora_transformer_", m, 16, i, o)
        t[f"lora_transformer_{m}.dora_scale"] = T(1, i)
    res = parse(t, {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "Flux.1-dev/lora"})
    check_invariants(res, t)
    assert res.format == "onetrainer" and len(res.groups) == 2
    assert {g.component for g in res.groups} == {"transformer"}
    assert set(res.groups[0].parts) == {"lora_down", "lora_up", "alpha", "dora_scale"}
    assert res.scale.convention == "kohya"


def test_onetrainer_bfl_numbered_splits_are_separate_layers():
    t = {}
    for j in range(3):
        t |= lora("transformer.", f"double_blocks.0.img_attn.qkv.{j}", 16, 3072, 3072)
    for j in range(4):
        o = 12288 if j == 3 else 3072
        t |= lora("transformer.", f"single_blocks.0.linear1.{j}", 16, 3072, o)
    res = parse(t)
    check_invariants(res, t)
    assert res.format == "onetrainer" and len(res.groups) == 7
    assert "transformer:double_blocks.0.img_attn.qkv.2" in by_key(res)
    assert "transformer:single_blocks.0.linear1.3" in by_key(res)


def test_onetrainer_by_metadata_and_omi():
    s = sdxl_kohya()
    assert parse(s, {"ot_branch": "master"}).format == "onetrainer"
    # modelspec without any ss_* key: OneTrainer; with ss_* keys: sd-scripts (which writes both)
    assert parse(s, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}).format == "onetrainer"
    assert parse(s, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
                     "ss_network_module": "networks.lora"}).format == "kohya"
    omi = {}
    omi |= lora("clip_l.", "text_model.encoder.layers.0.self_attn.q_proj", 8, 768, 768)
    omi |= lora("clip_g.", "text_model.encoder.layers.0.self_attn.q_proj", 8, 1280, 1280)
    omi |= lora("unet.", "input_blocks.4.1.transformer_blocks.0.attn1.to_q", 8, 640, 640)
    res = parse(omi, {"ot_branch": "omi_format"})
    check_invariants(res, omi)
    assert res.format == "onetrainer" and {g.component for g in res.groups} == {"te1", "te2", "unet"}


def test_bundled_embeddings_in_a_lora():
    t = sdxl_kohya()
    t["bundle_emb.mytoken.clip_l"] = T(2, 768, dtype="F32")
    t["bundle_emb.mytoken.clip_g"] = T(2, 1280, dtype="F32")
    res = parse(t, {"ot_branch": "master"})
    check_invariants(res, t)
    assert res.format == "onetrainer" and res.formats == {"onetrainer": 24, "textual-inversion": 2}
    assert res.embeddings == 2
    g = by_key(res)
    assert g["embedding:mytoken.clip_l"].parts == {"embedding": "bundle_emb.mytoken.clip_l"}
    assert g["embedding:mytoken.clip_g"].component == "embedding"


# ---------------------------------------------------------------------------------------------------------
# cloneofsimo


def cloneofsimo_keys(n_unet=4, n_te=2, r=1, tokens=True):
    t, meta = {}, {"unet": '["CrossAttention", "Attention", "GEGLU"]', "text_encoder": '["CLIPAttention"]'}
    dims = [(320, 320), (768, 320), (640, 640), (1280, 5120)]
    for i in range(n_unet):
        i_, o = dims[i % len(dims)]
        t[f"unet:{i}:down"] = T(r, i_, dtype="F32")
        t[f"unet:{i}:up"] = T(o, r, dtype="F32")
        meta[f"unet:{i}:rank"] = str(r)
    for i in range(n_te):
        t[f"text_encoder:{i}:down"] = T(r, 768, dtype="F32")
        t[f"text_encoder:{i}:up"] = T(768, r, dtype="F32")
        meta[f"text_encoder:{i}:rank"] = str(r)
    if tokens:
        for tok in ("<s1>", "<s2>"):
            t[tok] = T(768, dtype="F32")
            meta[tok] = "<embed>"
    return t, meta


def test_cloneofsimo_with_embedded_tokens():
    t, meta = cloneofsimo_keys()
    res = parse(t, meta)
    check_invariants(res, t)
    assert res.format == "cloneofsimo" and res.formats == {"cloneofsimo": 12, "textual-inversion": 2}
    g = by_key(res)
    assert g["unet:1"].parts == {"lora_down": "unet:1:down", "lora_up": "unet:1:up"}
    assert g["te:0"].component == "te"
    assert g["embedding:<s1>"].parts == {"embedding": "<s1>"} and res.embeddings == 2
    assert res.scale.convention == "unit" and not res.findings


def test_cloneofsimo_declared_rank_mismatch_is_la211():
    t, meta = cloneofsimo_keys(tokens=False)
    meta["unet:2:rank"] = "4"
    meta["unet:3:rank"] = "9" * 50  # not a bounded integer: ignored
    res = parse(t, meta)
    la211 = [f for f in res.findings if f.code == "LA211"]
    assert len(la211) == 1 and "unet:2 (declared 4, stored 1)" in la211[0].message
    assert "1 layer(s)" in la211[0].message


def test_cloneofsimo_token_without_metadata():
    t, _ = cloneofsimo_keys()
    res = parse(t)  # the "<embed>" marks are gone, the <token> spelling still says embedding
    check_invariants(res, t)
    assert res.embeddings == 2 and res.format == "cloneofsimo"


# ---------------------------------------------------------------------------------------------------------
# textual inversion files


@pytest.mark.parametrize("tensors,n_groups,modules", [
    ({"emb_params": T(8, 768, dtype="F32")}, 1, {"emb_params"}),
    ({"clip_l": T(4, 768, dtype="F32"), "clip_g": T(4, 1280, dtype="F32")}, 2, {"clip_l", "clip_g"}),
    ({"string_to_param.*": T(2, 1024, dtype="F32")}, 1, {"*"}),
    ({"<my-style>": T(768, dtype="F32")}, 1, {"<my-style>"}),
    ({"charturnerv2": T(15, 768, dtype="F32")}, 1, {"charturnerv2"}),
])
def test_textual_inversion_files(tensors, n_groups, modules):
    res = parse(tensors)
    check_invariants(res, tensors)
    assert res.format == "textual-inversion" and res.embeddings == n_groups
    assert {g.module for g in res.groups} == modules
    assert {g.component for g in res.groups} == {"embedding"}
    assert all(set(g.parts) == {"embedding"} for g in res.groups)
    assert res.domain_hint is None and res.scale.convention == "unit"


def test_single_key_that_is_not_token_like_is_not_an_embedding():
    for name, shape in [("lora_unet_foo", (4, 320)), ("base_model.model.x", (4,)), ("emb_params", (1, 2, 3))]:
        t = {name: T(*shape)}
        res = parse(t)
        check_invariants(res, t)
        assert res.embeddings == 0 and res.unrecognised == [name]


# ---------------------------------------------------------------------------------------------------------
# not diffusion / not a LoRA


def test_lora_vit_and_sam_orientation_by_shape():
    sam = {}
    for i in range(3):
        sam[f"w_a_{i:03d}"] = T(4, 768, dtype="F32")
        sam[f"w_b_{i:03d}"] = T(768, 4, dtype="F32")
    res = parse(sam)
    check_invariants(res, sam)
    assert res.format == "unknown" and res.formats == {"unknown": 6} and len(res.groups) == 3
    assert by_key(res)["vision:001"].parts == {"lora_down": "w_a_001", "lora_up": "w_b_001"}
    assert res.domain_hint == "not-diffusion" and "w_a_NNN" in res.domain_reason
    # transposed storage ([768, 4]): the small dim is the rank, so it is the up-shaped factor
    vit = {f"w_a_{i:03d}": T(768, 4, dtype="F32") for i in range(3)}
    res = parse(vit)
    check_invariants(res, vit)
    assert by_key(res)["vision:000"].parts == {"lora_up": "w_a_000"}
    # both factors in the same orientation: the letters decide for the pair, in either key order
    for order in (("w_a_000", "w_b_000"), ("w_b_000", "w_a_000")):
        for shape in ((768, 4), (4, 768)):
            both = {name: T(*shape) for name in order}
            res = parse(both)
            check_invariants(res, both)
            assert by_key(res)["vision:000"].parts == {"lora_down": "w_a_000", "lora_up": "w_b_000"}


def test_peft_unilora_is_not_a_lora():
    t = {"base_model.unilora_theta_d": T(23040, dtype="F32")}
    res = parse(t, {"format": "pt"})
    check_invariants(res, t)
    assert res.unrecognised == ["base_model.unilora_theta_d"] and not res.groups
    assert res.domain_hint == "not-a-lora" and "base_model.unilora_theta_d" in res.domain_reason
    assert res.format == "unknown" and res.formats == {}


def test_checkpoint_is_not_a_lora_and_empty_file():
    t = {"model.diffusion_model.input_blocks.0.0.weight": T(320, 4, 3, 3),
         "model.diffusion_model.input_blocks.0.0.bias": T(320),
         "first_stage_model.decoder.conv_in.weight": T(512, 4, 3, 3)}
    res = parse(t)
    check_invariants(res, t)
    assert not res.groups and res.domain_hint == "not-a-lora"
    la201 = [f for f in res.findings if f.code == "LA201"][0]
    assert la201.message.startswith("3 of 3 tensor(s)")
    empty = parse({})
    check_invariants(empty, {})
    assert empty.total == 0 and empty.format == "unknown" and not empty.groups and not empty.findings


def test_la201_lists_at_most_five_examples():
    t = {f"optimizer.state.{i}": T(3) for i in range(9)}
    t |= lora("lora_unet_", "down_blocks_0_attentions_0_proj_in", 4, 320, 320)
    res = parse(t)
    check_invariants(res, t)
    msg = [f for f in res.findings if f.code == "LA201"][0].message
    assert msg.count("'optimizer.state.") == 5 and "and 4 more" in msg


def test_hostile_names_never_break_grouping():
    t = {"lora_unet_\x1b[31mred.lora_down.weight": T(4, 320), "lora_unet_\x1b[31mred.lora_up.weight": T(320, 4),
         "": T(1), ".": T(1), "..lora_A.weight": T(1, 1), "unet.": T(1), "lora_unet_.alpha": T(),
         "a" * 5000 + ".lora_down.weight": T(4, 4), "bundle_emb.": T(2, 3), "string_to_param.": T(1, 2),
         "unet:1:down:extra": T(1, 1)}
    res = parse(t)
    check_invariants(res, t)
    assert "transformer:\x1b[31mred" in by_key(res)  # kept verbatim; escaping is the renderers' job


@pytest.mark.parametrize("prefix,module,style,alpha,component,fmt", [
    ("lora_prior_unet_", "down_blocks_0_2_attention_attn_out_proj", "kohya", True, "prior_unet", "kohya"),
    ("lora_prior_te_", "text_model_encoder_layers_0_self_attn_q_proj", "kohya", True, "prior_te", "kohya"),
    ("text_encoder_3.", "encoder.block.0.layer.0.SelfAttention.q", "peft", False, "te3", "diffusers-peft"),
    ("unet.base_model.model.", "transformer_blocks.0.attn1.to_q", "peft", False, "transformer", "peft"),
    ("t5.", "encoder.block.0.layer.0.SelfAttention.q", "kohya", True, "te3", "onetrainer"),
    ("text_encoders.", "t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q", "kohya", True, "te3",
     "comfy-native"),
    # bare paths: ComfyUI's generic format (DiffSynth writes bare diffusers names)
    ("", "double_blocks.0.img_attn.qkv", "kohya", True, "transformer", "comfy-native"),
    ("", "transformer_blocks.0.attn.to_q", "peft", False, "transformer", "comfy-native"),
    ("", "down_blocks.1.attentions.0.proj_in", "kohya", True, "unet", "comfy-native"),
])
def test_prefix_components(prefix, module, style, alpha, component, fmt):
    t = lora(prefix, module, 4, 640, 640, style=style, alpha=alpha)
    res = parse(t)
    check_invariants(res, t)
    assert len(res.groups) == 1 and not res.unrecognised
    assert res.groups[0].component == component and res.groups[0].format == fmt == res.format


def test_bare_legacy_text_encoder():
    t = {"text_model.encoder.layers.3.self_attn.v_proj.lora_linear_layer.down.weight": T(4, 768),
         "text_model.encoder.layers.3.self_attn.v_proj.lora_linear_layer.up.weight": T(768, 4)}
    res = parse(t)
    check_invariants(res, t)
    assert [g.key for g in res.groups] == ["te:text_model.encoder.layers.3.self_attn.v_proj"]
    assert res.format == "diffusers-legacy"


# ---------------------------------------------------------------------------------------------------------
# coverage over random key lists


_SEGMENTS = st.sampled_from([
    "lora_unet_", "lora_te1_", "lora_te_", "lora_transformer_", "lycoris_", "unet.", "transformer.", "text_encoder.",
    "text_encoder_2.", "base_model.model.", "diffusion_model.", "model.diffusion_model.", "text_encoders.clip_l.",
    "clip_l.", "bundle_emb.", "string_to_param.", "double_blocks.0.", "double_blocks_1_", "down_blocks.0.",
    "input_blocks_4_1_", "processor.", "img_attn.", "qkv", "to_q", "to_out", "norm.", "query_norm", "layers.0.",
    "self_attn.", "q_proj", "w_a_001", "w_b_001", "<s1>", "unet:3:", "text_encoder:0:", "emb_params", "clip_g",
    ".", "_", "x",
])
_SUFFIXES = st.sampled_from([
    "", ".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight", ".lora_A",
    ".lora_B.bias", ".lora_A.default.weight", ".lora.down.weight", "_lora.up.weight", ".lora_linear_layer.down.weight",
    "_lora1.down.weight", ".scale", ".weight", ".on_input", ".lokr_w1", ".hada_w1_a", ".dora_scale",
    ".lora_magnitude_vector", ".oft_blocks", ".a1.weight", ".diff", ".w_norm", ".bias_indices", "down", "up",
    ".ia3_l",
])
_KEY = st.builds(lambda segs, suf: "".join(segs) + suf, st.lists(_SEGMENTS, min_size=0, max_size=6), _SUFFIXES)
_SHAPE = st.lists(st.integers(0, 5000), min_size=0, max_size=4).map(tuple)
_META = st.dictionaries(
    st.sampled_from(["ot_branch", "software", "lora_adapter_metadata", "ss_network_args", "modelspec.title",
                     "<s1>", "unet:3:rank", "ss_x"]),
    st.sampled_from(["<embed>", "1", '{"name": "ai-toolkit"}', '{"split_qkv": true}', '{"r": 4, "lora_alpha": 8}',
                     '{"transformer.r": 4}', "[[[[", "x"]),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEY, _SHAPE, max_size=40), _META)
def test_every_tensor_is_accounted_for(keys, meta):
    tensors = {k: TensorMeta("F16", s) for k, s in keys.items()}
    res = parse(tensors, meta)
    check_invariants(res, tensors)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=30), _SHAPE, max_size=30))
def test_arbitrary_unicode_names(keys):
    tensors = {k: TensorMeta("F32", s) for k, s in keys.items()}
    check_invariants(parse(tensors), tensors)


# ---------------------------------------------------------------------------------------------------------
# bounded JSON and speed


def test_parse_json_bounded():
    assert parse_json_bounded('{"a": [1, {"b": "]]]]"}]}') == ({"a": [1, {"b": "]]]]"}]}, None)
    assert parse_json_bounded('"[[[[[[[[["', max_depth=2) == ("[[[[[[[[[", None)  # brackets inside strings
    v, why = parse_json_bounded("[" * 9 + "]" * 9, max_depth=8)
    assert v is None and "deeper" in why
    assert parse_json_bounded("[" * 8 + "]" * 8, max_depth=8) == ([[[[[[[[]]]]]]]], None)
    assert parse_json_bounded("[" * 200000 + "]" * 200000)[0] is None  # default cap, no RecursionError
    assert parse_json_bounded("Infinity")[0] is None
    assert parse_json_bounded('{"a": 1, "a": 2}')[0] is None
    assert parse_json_bounded("12", max_chars=1)[0] is None
    assert parse_json_bounded("12", max_chars=2) == (12, None)
    assert parse_json_bounded(None)[0] is None


def _time(tensors):
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        parse(tensors)
        best = min(best, time.perf_counter() - t0)
    return best


def test_parse_is_fast_and_linear():
    def sdxl(n):
        t = {}
        for i in range(n):
            t |= lora("lora_unet_", f"input_blocks_{i}_1_transformer_blocks_0_attn1_to_q", 8, 640, 640)
        return t

    small, large = sdxl(1000), sdxl(10000)  # 3000 and 30000 keys
    t_small, t_large = _time(small), _time(large)
    assert len(small) == 3000
    assert t_small < 0.05  # a few ms on a laptop; generous for loaded CI machines
    assert t_large < 25 * t_small  # 10x the keys: linear, with room for cache effects
