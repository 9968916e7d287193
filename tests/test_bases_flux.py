"""Base-family rules for the FLUX-like DiTs: flux1, chroma, flux2, flux2-klein-4b / -9b, hunyuan-video,
hunyuan-image, hidream.

Every case is a header-only synthetic adapter with real module names and widths (tests/fpsynth.py), built from
the architecture facts cited in rules/bases/<family>.yaml: FLUX.1 hidden 3072, 19 / 38 blocks, mlp 12288;
FLUX.2 mlp ratio 3 with a gated MLP (hidden 6144 / 4096 / 3072, 8 / 8 / 5 double and 48 / 24 / 20 single
blocks); HunyuanVideo 3072 with 20 / 40 blocks; HunyuanImage 2.1 3584 with 20 / 40 blocks; HiDream-I1 2560
with 16 / 32 blocks and 4 routed experts. Widths are written out from those facts, not read from the rules.
"""

from __future__ import annotations

import pytest

from audit.fingerprint import (
    identify,
    identify_tensors,
    layers_from_tensors,
    load_rules,
    resolve_claim,
)
from audit.formats import TensorMeta
from audit.record import Claim
from tests.fpsynth import blocks, lora

MY_FAMILIES = ("flux1", "chroma", "flux2", "flux2-klein-4b", "flux2-klein-9b", "hunyuan-video", "hunyuan-image",
               "hidream")
FLUX1_DEV_FAMILY = {"flux1-dev", "flux1-schnell", "flux1-kontext", "flux1-krea-dev"}


def _cands(fp) -> list[str]:
    return [c.id for c in fp.candidates]


def _outcome(fp, family: str, signal: str) -> str | None:
    for e in fp.evidence:
        if e.family == family and e.signal == signal:
            return e.outcome
    return None


# ------------------------------------------------------------------------------------------------------
# module templates (path, out, in) in the model's own naming

def flux1_double(mod: bool = True) -> list[tuple[str, int, int]]:
    t = []
    for s in ("img", "txt"):
        t += [(f"double_blocks.{{i}}.{s}_attn.qkv", 9216, 3072), (f"double_blocks.{{i}}.{s}_attn.proj", 3072, 3072),
              (f"double_blocks.{{i}}.{s}_mlp.0", 12288, 3072), (f"double_blocks.{{i}}.{s}_mlp.2", 3072, 12288)]
        if mod:
            t.append((f"double_blocks.{{i}}.{s}_mod.lin", 6 * 3072, 3072))
    return t


def flux1_single(mod: bool = True) -> list[tuple[str, int, int]]:
    t = [("single_blocks.{i}.linear1", 3 * 3072 + 12288, 3072), ("single_blocks.{i}.linear2", 3072, 3072 + 12288)]
    if mod:
        t.append(("single_blocks.{i}.modulation.lin", 3 * 3072, 3072))
    return t


def flux1_diffusers(nd: int = 19, ns: int = 38) -> list[tuple[str, int, int]]:
    h = 3072
    d = [(f"transformer_blocks.{{i}}.attn.{p}", h, h) for p in
         ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")]
    for ff in ("ff", "ff_context"):
        d += [(f"transformer_blocks.{{i}}.{ff}.net.0.proj", 4 * h, h),
              (f"transformer_blocks.{{i}}.{ff}.net.2", h, 4 * h)]
    d += [("transformer_blocks.{i}.norm1.linear", 6 * h, h), ("transformer_blocks.{i}.norm1_context.linear", 6 * h, h)]
    s = [(f"single_transformer_blocks.{{i}}.attn.{p}", h, h) for p in ("to_q", "to_k", "to_v")]
    s += [("single_transformer_blocks.{i}.proj_mlp", 4 * h, h), ("single_transformer_blocks.{i}.proj_out", h, 5 * h),
          ("single_transformer_blocks.{i}.norm.linear", 3 * h, h)]
    return blocks(d, range(nd)) + blocks(s, range(ns))


CLIP_L = [(f"te1:text_model.encoder.layers.{{i}}.self_attn.{p}", 768, 768)
          for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
CLIP_L += [("te1:text_model.encoder.layers.{i}.mlp.fc1", 3072, 768),
           ("te1:text_model.encoder.layers.{i}.mlp.fc2", 768, 3072)]
T5_XXL = [(f"te3:encoder.block.{{i}}.layer.0.SelfAttention.{p}", 4096, 4096) for p in "qkvo"]


def flux2_bfl(h: int, nd: int, ns: int, double_range=None, single_range=None) -> list[tuple[str, int, int]]:
    mlp = 3 * h
    d = []
    for s in ("img", "txt"):
        d += [(f"double_blocks.{{i}}.{s}_attn.qkv", 3 * h, h), (f"double_blocks.{{i}}.{s}_attn.proj", h, h),
              (f"double_blocks.{{i}}.{s}_mlp.0", 2 * mlp, h), (f"double_blocks.{{i}}.{s}_mlp.2", h, mlp)]
    s_ = [("single_blocks.{i}.linear1", 3 * h + 2 * mlp, h), ("single_blocks.{i}.linear2", h, h + mlp)]
    return blocks(d, double_range or range(nd)) + blocks(s_, single_range or range(ns))


def flux2_diffusers(h: int, nd: int, ns: int) -> list[tuple[str, int, int]]:
    mlp = 3 * h
    d = [(f"transformer_blocks.{{i}}.attn.{p}", h, h) for p in
         ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")]
    d += [("transformer_blocks.{i}.ff.linear_in", 2 * mlp, h), ("transformer_blocks.{i}.ff.linear_out", h, mlp),
          ("transformer_blocks.{i}.ff_context.linear_in", 2 * mlp, h),
          ("transformer_blocks.{i}.ff_context.linear_out", h, mlp)]
    s = [("single_transformer_blocks.{i}.attn.to_qkv_mlp_proj", 3 * h + 2 * mlp, h),
         ("single_transformer_blocks.{i}.attn.to_out", h, h + mlp)]
    extra = [("double_stream_modulation_img.linear", 6 * h, h), ("single_stream_modulation.linear", 3 * h, h)]
    return blocks(d, range(nd)) + blocks(s, range(ns)) + extra


def hunyuan_native(h: int, nd: int, ns: int, mod: bool = False) -> list[tuple[str, int, int]]:
    mlp = 4 * h
    d = []
    for s in ("img", "txt"):
        d += [(f"double_blocks.{{i}}.{s}_attn_qkv", 3 * h, h), (f"double_blocks.{{i}}.{s}_attn_proj", h, h),
              (f"double_blocks.{{i}}.{s}_mlp.fc1", mlp, h), (f"double_blocks.{{i}}.{s}_mlp.fc2", h, mlp)]
        if mod:
            d.append((f"double_blocks.{{i}}.{s}_mod.linear", 6 * h, h))
    s_ = [("single_blocks.{i}.linear1", 3 * h + mlp, h), ("single_blocks.{i}.linear2", h, h + mlp)]
    if mod:
        s_.append(("single_blocks.{i}.modulation.linear", 3 * h, h))
    return blocks(d, range(nd)) + blocks(s_, range(ns))


def hidream(nd: int = 16, ns: int = 32) -> list[tuple[str, int, int]]:
    d = 2560
    dbl = [(f"double_stream_blocks.{{i}}.block.attn1.{p}", d, d) for p in
           ("to_q", "to_k", "to_v", "to_out", "to_q_t", "to_k_t", "to_v_t", "to_out_t")]
    dbl += [("double_stream_blocks.{i}.block.ff_i.shared_experts.w1", 3584, d),
            ("double_stream_blocks.{i}.block.ff_i.shared_experts.w2", d, 3584),
            ("double_stream_blocks.{i}.block.ff_i.shared_experts.w3", 3584, d),
            ("double_stream_blocks.{i}.block.ff_t.w1", 6912, d), ("double_stream_blocks.{i}.block.ff_t.w2", d, 6912)]
    dbl += [(f"double_stream_blocks.{{i}}.block.ff_i.experts.{e}.w{w}", o, n) for e in range(4)
            for w, o, n in ((1, 6912, d), (2, d, 6912), (3, 6912, d))]
    sgl = [(f"single_stream_blocks.{{i}}.block.attn1.{p}", d, d) for p in ("to_q", "to_k", "to_v", "to_out")]
    sgl += [(f"single_stream_blocks.{{i}}.block.ff_i.experts.{e}.w1", 6912, d) for e in range(4)]
    sgl += [("single_stream_blocks.{i}.block.adaLN_modulation.1", 6 * d, d)]
    return blocks(dbl, range(nd)) + blocks(sgl, range(ns))


def _onetrainer(tensors: dict[str, TensorMeta]) -> dict[str, TensorMeta]:
    """OneTrainer's flattened diffusers spelling: ``lora_transformer_<module>`` instead of ``lora_unet_``."""
    return {("lora_transformer_" + k[len("lora_unet_"):]) if k.startswith("lora_unet_") else k: v
            for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------------
# rules files


def test_rules_load_and_every_family_has_an_anchor():
    rules = load_rules()
    for fid in MY_FAMILIES:
        assert fid in rules, fid
        fam = rules[fid]
        assert fam.anchors, fid
        assert all(s.kind != "forbid" for s in fam.anchors)
        assert all(s.source and ":" in s.source for s in fam.signals), fid


# ------------------------------------------------------------------------------------------------------
# FLUX.1


def _flux1_kohya_full() -> dict[str, TensorMeta]:
    mods = blocks(flux1_double(), range(19)) + blocks(flux1_single(), range(38)) + blocks(CLIP_L, range(12))
    return lora(mods, "kohya")


def test_flux1_typical_kohya_lora_is_flux1_high_despite_sd15_metadata():
    t = _flux1_kohya_full()
    assert 900 <= len(t) <= 1200  # 19 x 10 + 38 x 3 transformer modules and 72 CLIP-L modules, 3 keys each
    fp = identify_tensors(t, {"ss_base_model_version": "sd_1.5", "ss_network_module": "networks.lora"})
    assert fp.family == "flux1"
    assert fp.confidence == "high"
    assert not fp.partial
    assert FLUX1_DEV_FAMILY <= set(_cands(fp))
    assert all(c.family == "flux1" for c in fp.candidates)  # no shape-identical rival family
    for sig in ("double-count", "single-count", "qkv-out", "linear1-out", "mod-double", "te-clip-l"):
        assert _outcome(fp, "flux1", sig) == "match", sig
    # modulation layers rule Chroma out; img_mlp.0 / img_mod.lin rule HunyuanVideo out
    assert _outcome(fp, "chroma", "no-per-block-modulation") == "contradict"
    assert _outcome(fp, "hunyuan-video", "no-flux-names") == "contradict"
    assert _outcome(fp, "flux2-klein-4b", "mlp-up") == "contradict"


def test_flux1_sd15_claim_does_not_move_the_family():
    layers, _ = layers_from_tensors(_flux1_kohya_full())
    claim = Claim(source="metadata", key="ss_base_model_version", value="sd_1.5")
    fp, _ = identify(layers, claims=[claim])
    assert (fp.family, fp.confidence) == ("flux1", "high")
    assert claim.verdict != "agrees"


def test_flux1_t5_text_encoder_width():
    mods = blocks(flux1_double(), range(19)) + blocks(T5_XXL, range(24))
    fp = identify_tensors(lora(mods, "kohya"))
    assert fp.family == "flux1"
    assert _outcome(fp, "flux1", "te-t5") == "match"


@pytest.mark.parametrize("fmt", ["peft", "onetrainer"])
def test_flux1_diffusers_names(fmt):
    mods = flux1_diffusers()
    t = lora(mods, "peft") if fmt == "peft" else _onetrainer(lora(mods, "kohya"))
    fp = identify_tensors(t)
    assert (fp.family, fp.confidence) == ("flux1", "high")
    assert _outcome(fp, "flux1", "linear2-in") == "match"
    # the same diffusers names in HunyuanVideo: only the exact 19 / 38 block counts separate it
    assert _outcome(fp, "hunyuan-video", "double-count") == "lower-bound"
    assert "hunyuan-video" not in _cands(fp)


def test_flux1_fill_variant_from_img_in_384():
    mods = blocks(flux1_double(), range(19)) + [("img_in", 3072, 384), ("txt_in", 3072, 4096)]
    fp = identify_tensors(lora(mods, "comfy"))
    assert (fp.family, fp.confidence) == ("flux1", "high")
    assert _cands(fp) == ["flux1-fill"]


def test_flux1_depth_and_canny_share_img_in_128():
    mods = blocks(flux1_double(), range(19)) + [("img_in", 3072, 128)]
    fp = identify_tensors(lora(mods, "comfy"))
    assert fp.family == "flux1"
    assert set(_cands(fp)) == {"flux1-depth", "flux1-canny"}


def test_flux1_xlabs_processor_names():
    t = {}
    for i in range(19):
        for proj, (n_in, n_out) in {"qkv": (3072, 9216), "proj": (3072, 3072)}.items():
            for stream in (1, 2):
                base = f"double_blocks.{i}.processor.{proj}_lora{stream}"
                t[f"{base}.down.weight"] = TensorMeta("BF16", (16, n_in))
                t[f"{base}.up.weight"] = TensorMeta("BF16", (n_out, 16))
    fp = identify_tensors(t)
    assert fp.family == "flux1"
    assert _outcome(fp, "flux1", "qkv-out") == "match"
    assert _outcome(fp, "flux1", "double-count") == "match"


def test_flux1_bfl_control_lora_is_depth_or_canny():
    t = {}
    mods = {"img_in": (128, 3072), "txt_in": (4096, 3072)}
    mods.update({f"double_blocks.{i}.img_attn.qkv": (3072, 9216) for i in range(19)})
    mods.update({f"single_blocks.{i}.linear1": (3072, 21504) for i in range(38)})
    for mod, (n_in, n_out) in mods.items():
        t[f"{mod}.lora_A.weight"] = TensorMeta("BF16", (128, n_in))
        t[f"{mod}.lora_B.weight"] = TensorMeta("BF16", (n_out, 128))
        t[f"{mod}.lora_B.bias"] = TensorMeta("BF16", (n_out,))
    t["double_blocks.0.img_attn.norm.query_norm.scale"] = TensorMeta("BF16", (128,))
    fp = identify_tensors(t)
    assert (fp.family, fp.confidence) == ("flux1", "high")
    assert set(_cands(fp)) == {"flux1-depth", "flux1-canny"}


def test_trained_guidance_in_speaks_against_schnell():
    mods = blocks(flux1_double(), range(19)) + [("guidance_in.in_layer", 3072, 256),
                                                ("guidance_in.out_layer", 3072, 3072)]
    fp = identify_tensors(lora(mods, "kohya"))
    ids = _cands(fp)
    assert fp.family == "flux1"
    assert "flux1-dev" in ids and "flux1-kontext" in ids
    assert "flux1-schnell" not in ids


def test_flux1_and_chroma_are_shape_identical_without_modulation_layers():
    mods = blocks(flux1_double(mod=False), range(19)) + blocks(flux1_single(mod=False), range(38))
    fp = identify_tensors(lora(mods, "kohya"))
    assert fp.family == "flux1"  # higher prior
    assert fp.confidence == "medium"
    assert "chroma" in _cands(fp)
    assert fp.scores["flux1"] == fp.scores["chroma"]


def test_flux1_early_block_attention_stays_ambiguous_with_klein_4b():
    att = [m for m in flux1_double(mod=False) if "attn" in m[0]]
    fp = identify_tensors(lora(blocks(att, range(3)), "kohya"))
    assert fp.family == "flux1"
    assert fp.confidence == "medium"
    assert fp.partial
    assert "flux2-klein-4b" in _cands(fp)
    assert _outcome(fp, "flux1", "double-count") == "lower-bound"


# ------------------------------------------------------------------------------------------------------
# Chroma


def test_chroma_approximator_decides():
    mods = (blocks(flux1_double(mod=False), range(19)) + blocks(flux1_single(mod=False), range(38))
            + [("distilled_guidance_layer.in_proj", 5120, 64), ("distilled_guidance_layer.out_proj", 3072, 5120)]
            + blocks([("distilled_guidance_layer.layers.{i}.in_layer", 5120, 5120)], range(5)))
    fp = identify_tensors(lora(mods, "kohya"))
    assert (fp.family, fp.confidence) == ("chroma", "high")
    assert "flux1" not in _cands(fp)
    assert _outcome(fp, "flux1", "no-chroma-approximator") == "contradict"
    assert _outcome(fp, "chroma", "approximator-count") == "match"


def test_chroma_diffusers_names():
    h = 3072
    mods = blocks([("transformer_blocks.{i}.attn.to_q", h, h), ("transformer_blocks.{i}.attn.add_k_proj", h, h),
                   ("transformer_blocks.{i}.ff.net.0.proj", 4 * h, h)], range(19))
    mods += blocks([("single_transformer_blocks.{i}.proj_mlp", 4 * h, h)], range(38))
    mods += [("distilled_guidance_layer.in_proj", 5120, 64)]
    mods += blocks([("distilled_guidance_layer.layers.{i}.linear_1", 5120, 5120)], range(5))
    fp = identify_tensors(lora(mods, "peft"))
    assert (fp.family, fp.confidence) == ("chroma", "high")


# ------------------------------------------------------------------------------------------------------
# FLUX.2


@pytest.mark.parametrize("family,h,nd,ns", [
    ("flux2-klein-4b", 3072, 5, 20),
    ("flux2-klein-9b", 4096, 8, 24),
    ("flux2", 6144, 8, 48),
])
def test_flux2_family_full_bfl(family, h, nd, ns):
    mods = flux2_bfl(h, nd, ns) + [("double_stream_modulation_img.lin", 6 * h, h),
                                    ("single_stream_modulation.lin", 3 * h, h)]
    fp = identify_tensors(lora(mods, "kohya"))
    assert (fp.family, fp.confidence) == (family, "high")
    assert not fp.partial
    assert all(c.family == family for c in fp.candidates)
    for other in ("flux2-klein-4b", "flux2-klein-9b", "flux2", "flux1"):
        if other != family:
            assert _outcome(fp, other, "hidden-in") == "contradict" or _outcome(fp, other, "mlp-up") == "contradict"


@pytest.mark.parametrize("family,h,nd,ns", [
    ("flux2-klein-4b", 3072, 5, 20),
    ("flux2-klein-9b", 4096, 8, 24),
    ("flux2", 6144, 8, 48),
])
def test_flux2_family_full_diffusers(family, h, nd, ns):
    fp = identify_tensors(lora(flux2_diffusers(h, nd, ns), "peft"))
    assert (fp.family, fp.confidence) == (family, "high")
    assert _outcome(fp, family, "linear1-out") == "match"
    assert _outcome(fp, family, "mod-double") == "match"


def test_klein_4b_is_not_flux1():
    fp = identify_tensors(lora(flux2_bfl(3072, 5, 20), "kohya"))
    assert fp.family == "flux2-klein-4b"
    assert _outcome(fp, "flux1", "mlp-up") == "contradict"  # 18432 vs 12288
    assert _outcome(fp, "flux1", "linear1-out") == "contradict"  # 27648 vs 21504
    assert "flux1" not in _cands(fp)


def test_flux2_dev_partial_lora_is_a_lower_bound():
    mods = flux2_bfl(6144, 8, 48, double_range=range(2), single_range=range(10))
    fp = identify_tensors(lora(mods, "comfy"))
    assert fp.family == "flux2"
    assert fp.partial
    assert _outcome(fp, "flux2", "single-count") == "lower-bound"


def test_flux2_per_block_modulation_is_forbidden():
    mods = flux2_bfl(3072, 5, 20) + blocks([("double_blocks.{i}.img_mod.lin", 18432, 3072)], range(5))
    fp = identify_tensors(lora(mods, "kohya"))
    assert _outcome(fp, "flux2-klein-4b", "no-per-block-modulation") == "contradict"
    assert fp.confidence == "low"


# ------------------------------------------------------------------------------------------------------
# HunyuanVideo / HunyuanImage


def test_hunyuan_video_musubi_lora():
    fp = identify_tensors(lora(hunyuan_native(3072, 20, 40), "kohya"))
    assert (fp.family, fp.confidence) == ("hunyuan-video", "high")
    assert _outcome(fp, "flux1", "no-hunyuan-names") == "contradict"
    assert _outcome(fp, "hunyuan-image", "hidden-in") == "contradict"


def test_hunyuan_video_modulation_spelling():
    fp = identify_tensors(lora(hunyuan_native(3072, 4, 0, mod=True) + [("single_blocks.3.modulation.linear", 9216,
                                                                        3072)], "comfy"))
    assert fp.family == "hunyuan-video"
    assert fp.partial
    assert _outcome(fp, "hunyuan-video", "mod-double") == "match"


def test_single_block_only_lora_flux1_vs_hunyuan_video():
    single = [("single_blocks.{i}.linear1", 21504, 3072), ("single_blocks.{i}.linear2", 3072, 15360)]
    fp = identify_tensors(lora(blocks(single, range(38)), "kohya"))
    assert fp.family == "flux1"
    assert fp.confidence == "medium"
    assert "hunyuan-video" in _cands(fp)

    fp = identify_tensors(lora(blocks(single, range(40)), "kohya"))  # index 39: only HunyuanVideo has 40
    assert (fp.family, fp.confidence) == ("hunyuan-video", "high")
    assert _outcome(fp, "flux1", "single-count") == "contradict"


def test_hunyuan_video_diffusers_double_index_19():
    h = 3072
    mods = blocks([("transformer_blocks.{i}.attn.to_q", h, h), ("transformer_blocks.{i}.attn.add_q_proj", h, h),
                   ("transformer_blocks.{i}.ff.net.0.proj", 4 * h, h)], range(20))
    fp = identify_tensors(lora(mods, "peft"))
    assert fp.family == "hunyuan-video"
    assert _outcome(fp, "flux1", "double-count") == "contradict"


def test_hunyuan_video_diffusers_token_refiner_is_not_the_pooled_vector():
    h = 3072
    mods = blocks([("transformer_blocks.{i}.attn.to_q", h, h), ("transformer_blocks.{i}.norm1.linear", 6 * h, h)],
                  range(20))
    mods += [("context_embedder.proj_in", h, 4096),
             ("context_embedder.time_text_embed.text_embedder.linear_1", h, 4096),  # refiner: pooled text states
             ("context_embedder.token_refiner.refiner_blocks.1.attn.to_q", h, h),
             ("time_text_embed.text_embedder.linear_1", h, 768)]  # model: pooled CLIP-L vector
    fp = identify_tensors(lora(mods, "peft"))
    assert (fp.family, fp.confidence) == ("hunyuan-video", "high")
    assert _outcome(fp, "hunyuan-video", "vec-in") == "match"
    assert _outcome(fp, "hunyuan-video", "txt-in") == "match"
    assert _outcome(fp, "flux1", "no-hunyuan-names") == "contradict"


def test_hunyuan_image_21():
    mods = hunyuan_native(3584, 20, 40, mod=True) + [("byt5_in.fc1", 2048, 1472), ("byt5_in.fc3", 3584, 2048)]
    fp = identify_tensors(lora(mods, "kohya"))
    assert (fp.family, fp.confidence) == ("hunyuan-image", "high")
    assert _outcome(fp, "hunyuan-image", "linear1-out") == "match"  # 3 x 3584 + 14336
    assert _outcome(fp, "hunyuan-video", "hidden-in") == "contradict"
    assert _outcome(fp, "hunyuan-video", "no-byt5") == "contradict"


def test_hunyuan_image_partial():
    fp = identify_tensors(lora(hunyuan_native(3584, 3, 0), "comfy"))
    assert fp.family == "hunyuan-image"
    assert fp.partial


# ------------------------------------------------------------------------------------------------------
# HiDream


def test_hidream_full_diffusers():
    fp = identify_tensors(lora(hidream(), "peft"))
    assert (fp.family, fp.confidence) == ("hidream", "high")
    assert not fp.partial
    for sig in ("expert-up", "shared-expert-up", "adaln-single", "double-count", "single-count", "expert-count"):
        assert _outcome(fp, "hidream", sig) == "match", sig
    assert {c.id for c in fp.candidates} == {"hidream-i1-full", "hidream-i1-dev", "hidream-i1-fast"}


def test_hidream_partial_comfy():
    fp = identify_tensors(lora(hidream(nd=6, ns=0), "comfy"))
    assert fp.family == "hidream"
    assert fp.partial
    assert _outcome(fp, "hidream", "double-count") == "lower-bound"


def test_hidream_wrong_width_contradicts():
    mods = blocks([("double_stream_blocks.{i}.block.attn1.to_q", 3072, 3072)], range(16))
    fp = identify_tensors(lora(mods, "peft"))
    assert _outcome(fp, "hidream", "hidden-in") == "contradict"
    assert fp.family != "hidream" or fp.confidence == "low"


# ------------------------------------------------------------------------------------------------------
# look-alikes from other families never anchor these rules


def test_sd_unet_and_wan_keys_do_not_anchor_flux_like_families():
    sd1 = [("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 640, 768),
           ("up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q", 320, 320),
           ("mid_block.attentions.0.transformer_blocks.0.ff.net.2", 1280, 5120)]
    wan = blocks([("blocks.{i}.self_attn.q", 5120, 5120), ("blocks.{i}.cross_attn.k", 5120, 4096),
                  ("blocks.{i}.ffn.0", 13824, 5120)], range(40))
    for mods in (sd1, wan):
        fp = identify_tensors(lora(mods, "kohya"))
        assert not set(fp.scores) & set(MY_FAMILIES), fp.scores


def test_sd3_diffusers_widths_contradict_flux1():
    h = 1536  # SD3 medium: 24 blocks x 64
    mods = blocks([("transformer_blocks.{i}.attn.to_q", h, h), ("transformer_blocks.{i}.attn.add_q_proj", h, h),
                   ("transformer_blocks.{i}.ff.net.0.proj", 4 * h, h)], range(24))
    fp = identify_tensors(lora(mods, "peft"))
    assert _outcome(fp, "flux1", "hidden-in") == "contradict"
    assert fp.family != "flux1"


def test_qwen_image_names_contradict_flux1():
    h = 3072
    mods = blocks([("transformer_blocks.{i}.attn.to_q", h, h), ("transformer_blocks.{i}.img_mlp.net.0.proj", 4 * h, h),
                   ("transformer_blocks.{i}.img_mod.1", 6 * h, h)], range(60))
    fp = identify_tensors(lora(mods, "peft"))
    assert _outcome(fp, "flux1", "no-qwen-names") == "contradict"
    assert fp.family != "flux1"


# ------------------------------------------------------------------------------------------------------
# claims


@pytest.mark.parametrize("key,value,family,variant", [
    ("modelspec.architecture", "flux-1-dev/lora", "flux1", "flux1-dev"),
    ("modelspec.architecture", "flux-1-schnell/lora", "flux1", "flux1-schnell"),
    ("ss_base_model_version", "flux1", "flux1", None),
    ("ss_base_model_version", "flux.1", "flux1", None),
    ("ss_base_model_version", "flux.1_kontext", "flux1", "flux1-kontext"),
    ("modelspec.architecture", "Flux.1-dev/lora", "flux1", None),
    ("modelspec.architecture", "Flux.1-fill-dev/lora", "flux1", "flux1-fill"),
    ("baseModel", "Flux.1 D", "flux1", "flux1-dev"),
    ("baseModel", "Flux.1 Krea", "flux1", "flux1-krea-dev"),
    ("base_model", "black-forest-labs/FLUX.1-schnell", "flux1", "flux1-schnell"),
    ("ss_sd_model_name", "flux1-dev-kontext_fp8_scaled.safetensors", "flux1", "flux1-kontext"),
    ("ss_sd_model_name", "flux1-dev.safetensors", "flux1", "flux1-dev"),
    ("modelspec.architecture", "chroma/lora", "chroma", None),
    ("modelspec.architecture", "Chroma1/lora", "chroma", None),
    ("base_model", "lodestones/Chroma1-HD", "chroma", "chroma1-hd"),
    ("ss_base_model_version", "flux_2_klein_4b", "flux2-klein-4b", None),
    ("modelspec.architecture", "Flux.2-klein-9b/lora", "flux2-klein-9b", None),
    ("baseModel", "Flux.2 Klein 9B-base", "flux2-klein-9b", "flux2-klein-9b-base"),
    ("ss_base_model_version", "flux2", "flux2", None),
    ("modelspec.architecture", "Flux.2-dev/lora", "flux2", None),
    ("ss_sd_model_name", "flux2-dev.safetensors", "flux2", None),
    ("modelspec.architecture", "hunyuan-video/lora", "hunyuan-video", None),
    ("baseModel", "Hunyuan Video", "hunyuan-video", None),
    ("modelspec.architecture", "framepack/lora", "hunyuan-video", "framepack"),
    ("ss_base_model_version", "hunyuan-image-2.1", "hunyuan-image", None),
    ("ss_base_model_version", "hidream_i1", "hidream", None),
    ("modelspec.architecture", "hidream-i1/lora", "hidream", None),
    ("base_model", "HiDream-ai/HiDream-I1-Dev", "hidream", "hidream-i1-dev"),
])
def test_claims_resolve(key, value, family, variant):
    assert resolve_claim(key, value) == (family, variant)


@pytest.mark.parametrize("key,value", [
    ("modelspec.architecture", "hunyuan-video-1.5/lora"),  # a different architecture
    ("baseModel", "HiDream-O1"),  # a different architecture
    ("ss_base_model_version", "sd_1.5"),
])
def test_claims_that_are_not_these_families(key, value):
    hit = resolve_claim(key, value)
    assert hit is None or hit[0] not in MY_FAMILIES
