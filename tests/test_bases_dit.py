"""The shipped DiT family rules (wan, ltx-video, qwen-image, z-image, lumina2, anima, krea2, kandinsky5).

Every case is a header-only synthetic LoRA (tests/fpsynth.py) with the real module names and widths of the
base model, in the key formats the trainers write, scored against the full shipped rule set, so a look-alike
family added later that steals one of these files makes the test fail. Widths and block counts come from the
sources cited in each rules file; the ones the cases use are repeated beside the templates below.
"""

from __future__ import annotations

import pytest

from audit import fingerprint as fpm
from audit import formats
from audit.record import Claim
from tests import fpsynth

B = fpsynth.blocks


def _identify(mods, fmt="kohya", claims=()):
    tensors = fpsynth.lora(mods, fmt)
    layers, fr = fpm.layers_from_tensors(tensors)
    fp, findings = fpm.identify(layers, claims=list(claims), domain=fr.domain_hint, domain_reason=fr.domain_reason)
    return fp, findings


def _ids(fp):
    return [c.id for c in fp.candidates]


def _evidence(fp, family, signal):
    return next(e for e in fp.evidence if e.family == family and e.signal == signal)


def _contradicted(fp, family):
    return {e.signal for e in fp.evidence if e.family == family and e.outcome == "contradict"}


# ------------------------------------------------------------------------------------------------------
# templates: (module path with {i}, out, in)

# Wan native (Wan-Video/Wan2.1 wan/modules/model.py): q/k/v/o are Linear(dim, dim), ffn.0 Linear(dim, ffn_dim)
def _wan_native(dim, ffn, *, i2v=False):
    t = [("blocks.{i}.self_attn.q", dim, dim), ("blocks.{i}.self_attn.o", dim, dim),
         ("blocks.{i}.cross_attn.k", dim, dim), ("blocks.{i}.cross_attn.v", dim, dim),
         ("blocks.{i}.ffn.0", ffn, dim), ("blocks.{i}.ffn.2", dim, ffn)]
    if i2v:
        t += [("blocks.{i}.cross_attn.k_img", dim, dim), ("blocks.{i}.cross_attn.v_img", dim, dim)]
    return t


# Wan diffusers (transformer_wan.py): attn1 / attn2 to_*, ffn.net.0.proj / net.2
def _wan_diffusers(dim, ffn):
    return [("blocks.{i}.attn1.to_q", dim, dim), ("blocks.{i}.attn1.to_out.0", dim, dim),
            ("blocks.{i}.attn2.to_k", dim, dim), ("blocks.{i}.ffn.net.0.proj", ffn, dim),
            ("blocks.{i}.ffn.net.2", dim, ffn)]


# Anima / Cosmos-Predict2-2B native (ComfyUI cosmos/predict2.py; widths from a real Anima checkpoint header):
# q_proj [2048, 2048], cross k_proj [2048, 1024], mlp.layer1 [8192, 2048], adaln .1 [256, 2048], .2 [6144, 256]
ANIMA = [("blocks.{i}.self_attn.q_proj", 2048, 2048), ("blocks.{i}.self_attn.output_proj", 2048, 2048),
         ("blocks.{i}.cross_attn.q_proj", 2048, 2048), ("blocks.{i}.cross_attn.k_proj", 2048, 1024),
         ("blocks.{i}.cross_attn.v_proj", 2048, 1024), ("blocks.{i}.mlp.layer1", 8192, 2048),
         ("blocks.{i}.mlp.layer2", 2048, 8192)]
ANIMA_ADALN = [("blocks.{i}.adaln_modulation_self_attn.1", 256, 2048),
               ("blocks.{i}.adaln_modulation_self_attn.2", 6144, 256)]
# LLM adapter: 6 blocks at 1024, mlp.0 [4096, 1024]; Qwen3-0.6B text encoder hidden 1024 (q_proj out 2048)
ANIMA_ADAPTER = [("llm_adapter.blocks.{i}.self_attn.q_proj", 1024, 1024),
                 ("llm_adapter.blocks.{i}.cross_attn.k_proj", 1024, 1024), ("llm_adapter.blocks.{i}.mlp.0", 4096, 1024)]
ANIMA_TE = [("te:layers.{i}.self_attn.q_proj", 2048, 1024), ("te:layers.{i}.mlp.gate_proj", 3072, 1024)]
# diffusers CosmosTransformer3DModel names for the same DiT
ANIMA_DIFFUSERS = [("transformer_blocks.{i}.attn1.to_q", 2048, 2048), ("transformer_blocks.{i}.attn2.to_k", 2048, 1024),
                   ("transformer_blocks.{i}.ff.net.0.proj", 8192, 2048),
                   ("transformer_blocks.{i}.norm1.linear_1", 256, 2048)]

# Qwen-Image (transformer_qwenimage.py): 60 blocks, 3072, MLP 12288, img_mod 6 x 3072
QWEN = [("transformer_blocks.{i}.attn.to_q", 3072, 3072), ("transformer_blocks.{i}.attn.to_out.0", 3072, 3072),
        ("transformer_blocks.{i}.attn.add_k_proj", 3072, 3072), ("transformer_blocks.{i}.attn.to_add_out", 3072, 3072),
        ("transformer_blocks.{i}.img_mlp.net.0.proj", 12288, 3072), ("transformer_blocks.{i}.txt_mlp.net.2", 3072, 12288),
        ("transformer_blocks.{i}.img_mod.1", 18432, 3072)]

# Z-Image native (real Turbo checkpoint header): qkv [11520, 3840], out [3840, 3840], w1 / w3 [10240, 3840],
# w2 [3840, 10240], adaLN_modulation.0 [15360, 256]; 30 layers, 2 + 2 refiners
ZIMAGE = [("layers.{i}.attention.qkv", 11520, 3840), ("layers.{i}.attention.out", 3840, 3840),
          ("layers.{i}.feed_forward.w1", 10240, 3840), ("layers.{i}.feed_forward.w2", 3840, 10240),
          ("layers.{i}.adaLN_modulation.0", 15360, 256)]
ZIMAGE_DIFFUSERS = [("layers.{i}.attention.to_q", 3840, 3840), ("layers.{i}.attention.to_k", 3840, 3840),
                    ("layers.{i}.attention.to_out.0", 3840, 3840), ("layers.{i}.feed_forward.w3", 10240, 3840)]

# Lumina-Image 2.0 native: dim 2304, 24 + 2 x 8 heads of 96 => qkv out 3840, SwiGLU 9216, adaLN Linear(1024, 9216)
LUMINA = [("layers.{i}.attention.qkv", 3840, 2304), ("layers.{i}.attention.out", 2304, 2304),
          ("layers.{i}.feed_forward.w1", 9216, 2304), ("layers.{i}.feed_forward.w2", 2304, 9216),
          ("layers.{i}.adaLN_modulation.1", 9216, 1024)]
# diffusers Lumina2Transformer2DModel: attn.to_k / to_v out 768 (8 kv heads of 96)
LUMINA_DIFFUSERS = [("layers.{i}.attn.to_q", 2304, 2304), ("layers.{i}.attn.to_k", 768, 2304),
                    ("layers.{i}.attn.to_out.0", 2304, 2304), ("layers.{i}.feed_forward.linear_1", 9216, 2304),
                    ("layers.{i}.norm1.linear", 9216, 1024)]

# Krea-2 native (a real sd-scripts LoRA capture): wq / wo / gate [6144, 6144], wk / wv [1536, 6144],
# mlp gate / up [16384, 6144], down [6144, 16384]; 28 blocks; text fusion at 2560 with mlp 6912
KREA2 = [("blocks.{i}.attn.wq", 6144, 6144), ("blocks.{i}.attn.wk", 1536, 6144), ("blocks.{i}.attn.wv", 1536, 6144),
         ("blocks.{i}.attn.wo", 6144, 6144), ("blocks.{i}.attn.gate", 6144, 6144),
         ("blocks.{i}.mlp.gate", 16384, 6144), ("blocks.{i}.mlp.up", 16384, 6144), ("blocks.{i}.mlp.down", 6144, 16384)]
KREA2_TOP = [("txtfusion.layerwise_blocks.0.attn.wq", 2560, 2560), ("txtfusion.refiner_blocks.1.mlp.up", 6912, 2560),
             ("tproj.1", 36864, 6144), ("txtmlp.1", 6144, 2560), ("tmlp.0", 6144, 256)]
KREA2_DIFFUSERS = [("transformer_blocks.{i}.attn.to_q", 6144, 6144), ("transformer_blocks.{i}.attn.to_k", 1536, 6144),
                   ("transformer_blocks.{i}.attn.to_gate", 6144, 6144), ("transformer_blocks.{i}.ff.up", 16384, 6144),
                   ("transformer_blocks.{i}.ff.down", 6144, 16384)]


# LTX-Video (transformer_ltx.py; 13B config): width = cross-attention width, MLP 4 x width
def _ltx(width):
    return [("transformer_blocks.{i}.attn1.to_q", width, width), ("transformer_blocks.{i}.attn1.to_out.0", width, width),
            ("transformer_blocks.{i}.attn2.to_q", width, width), ("transformer_blocks.{i}.attn2.to_k", width, width),
            ("transformer_blocks.{i}.attn2.to_v", width, width),
            ("transformer_blocks.{i}.ff.net.0.proj", 4 * width, width), ("transformer_blocks.{i}.ff.net.2", width, 4 * width)]


# LTX-2 audio stream (widths read from a released LTX-2.5 LoRA): audio 2048, audio_ff down input 8192
LTX2_AUDIO = [("transformer_blocks.{i}.audio_attn1.to_q", 2048, 2048),
              ("transformer_blocks.{i}.audio_to_video_attn.to_k", 4096, 4096),
              ("transformer_blocks.{i}.audio_ff.net.2", 2048, 8192)]


# Kandinsky 5.0 (transformer_kandinsky.py; configs): model_dim, ff 4 x model_dim
def _k5(dim):
    return [("visual_transformer_blocks.{i}.self_attention.to_query", dim, dim),
            ("visual_transformer_blocks.{i}.self_attention.out_layer", dim, dim),
            ("visual_transformer_blocks.{i}.cross_attention.to_key", dim, dim),
            ("visual_transformer_blocks.{i}.feed_forward.in_layer", 4 * dim, dim),
            ("visual_transformer_blocks.{i}.feed_forward.out_layer", dim, 4 * dim)]


# ------------------------------------------------------------------------------------------------------
# rules load


def test_the_dit_families_load_with_anchors_variants_and_sources():
    rules = fpm.load_rules()
    for fam in ("wan", "ltx-video", "qwen-image", "z-image", "lumina2", "anima", "krea2", "kandinsky5"):
        r = rules[fam]
        assert r.anchors and r.variants and r.claims
        assert all(s.source and " @ " in s.source for s in r.signals)


@pytest.mark.parametrize("mods", [
    [("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 320, 768)],  # an SD UNet layer
    [("te:text_model.encoder.layers.0.self_attn.q_proj", 768, 768)],  # a CLIP text encoder layer
    [("model.layers.0.self_attn.q_proj", 4096, 4096), ("lm_head", 32000, 4096)],  # an LLM
])
def test_unrelated_names_anchor_none_of_these_families(mods):
    fp, _ = _identify(mods)
    assert not set(fp.scores) & {"wan", "ltx-video", "qwen-image", "z-image", "lumina2", "anima", "krea2", "kandinsky5"}


@pytest.mark.parametrize("mods", [
    B(ANIMA + ANIMA_ADALN, [0, 27]) + B(ANIMA_ADAPTER, [0, 5]) + B(ANIMA_TE, [0]),
    B(ANIMA_DIFFUSERS, [0, 27]),
    B(ZIMAGE, [0, 29]) + B(ZIMAGE_DIFFUSERS, [1]),
    B(LUMINA, [0, 25]) + B(LUMINA_DIFFUSERS, [1]),
    B(KREA2, [0, 27]) + KREA2_TOP,
    B(_wan_native(5120, 13824, i2v=True), [0, 39]),
    B(QWEN, [0, 59]),
    B(_k5(1792), [0, 31]),
])
def test_no_family_here_is_read_as_a_language_model(mods):
    """audit.formats flags LLM-like names (layers.N.self_attn.q_proj) outside text encoders as not-diffusion;
    none of these denoisers (nor the Anima LLM adapter, nor TE layers under lora_te_) may trip it."""
    for fmt in ("kohya", "comfy", "peft"):
        fr = formats.parse(fpsynth.lora(mods, fmt))
        assert fr.domain_hint is None, (fmt, fr.domain_reason)


@pytest.mark.parametrize("names", [
    {"layers.0.attention.qkv": (11520, 3840), "layers.0.feed_forward.w1": (10240, 3840),
     "model.layers.0.self_attn.q_proj": (4096, 2560)},  # Z-Image DiT + Qwen3-4B encoder, no prefixes
    {"blocks.0.self_attn.q_proj": (2048, 2048), "blocks.0.mlp.layer1": (8192, 2048),
     "layers.0.self_attn.q_proj": (2048, 1024)},  # Anima DiT + Qwen3-0.6B encoder, no prefixes
])
def test_prefixless_dit_with_prefixless_text_encoder_is_not_a_language_model(names):
    tensors = {}
    for name, (out, inp) in names.items():
        tensors[f"{name}.lora_A.weight"] = formats.TensorMeta("F16", (4, inp))
        tensors[f"{name}.lora_B.weight"] = formats.TensorMeta("F16", (out, 4))
    assert formats.parse(tensors).domain_hint is None


@pytest.mark.parametrize(("key", "value", "family", "variant"), [
    ("modelspec.architecture", "wan2.1/lora", "wan", None),
    ("ss_base_model_version", "wan", "wan", None),
    ("ss_base_model_version", "wan_2.2_14b", "wan", None),
    ("ss_base_model_version", "wan_2.2_5b", "wan", "wan2.2-ti2v-5b"),
    ("baseModel", "Wan Video 14B i2v 480p", "wan", "wan2.1-i2v-14b"),
    ("baseModel", "Wan Video 2.2 T2V-A14B", "wan", "wan2.2-t2v-a14b"),
    ("modelspec.architecture", "Qwen-Image/lora", "qwen-image", "qwen-image"),
    ("modelspec.architecture", "Qwen-Image-Edit-Plus/lora", "qwen-image", "qwen-image-edit-2509"),
    ("ss_base_model_version", "qwen_image_edit", "qwen-image", None),
    ("baseModel", "Qwen", "qwen-image", None),
    ("modelspec.architecture", "Qwen", None, None),  # the bare Civitai name counts only as a base-model field
    ("modelspec.architecture", "Z-Image/lora", "z-image", None),
    ("ss_base_model_version", "zimage", "z-image", None),
    ("baseModel", "ZImageBase", "z-image", "z-image-base"),
    ("ss_base_model_version", "lumina2", "lumina2", "lumina-image-2.0"),
    ("modelspec.architecture", "lumina-2/lora", "lumina2", "lumina-image-2.0"),
    ("ss_base_model_version", "anima", "anima", None),
    ("modelspec.architecture", "anima-preview/lora", "anima", None),
    ("modelspec.architecture", "Anima/lora", "anima", None),
    ("ss_base_model_version", "krea2", "krea2", None),
    ("modelspec.architecture", "Krea-2/lora", "krea2", None),
    ("baseModel", "Krea 2", "krea2", None),
    ("ss_base_model_version", "ltx2", "ltx-video", "ltx-2"),
    ("baseModel", "LTXV", "ltx-video", None),
    ("modelspec.architecture", "Kandinsky-5/lora", "kandinsky5", None),
    ("ss_base_model_version", "kandinsky5", "kandinsky5", None),
])
def test_trainer_and_hub_strings_resolve(key, value, family, variant):
    assert fpm.resolve_claim(key, value) == ((family, variant) if family else None)


# ------------------------------------------------------------------------------------------------------
# Wan


@pytest.mark.parametrize(("dim", "ffn", "last", "expected"), [
    (1536, 8960, 29, ["wan2.1-t2v-1.3b"]),
    (3072, 14336, 29, ["wan2.2-ti2v-5b"]),
    (5120, 13824, 39, ["wan2.1-t2v-14b", "wan2.1-i2v-14b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"]),
])
@pytest.mark.parametrize("fmt", ["kohya", "comfy"])
def test_wan_native_sizes_narrow_the_candidates(dim, ffn, last, expected, fmt):
    fp, _ = _identify(B(_wan_native(dim, ffn), [0, 10, last]), fmt)
    assert (fp.family, fp.confidence) == ("wan", "high")
    assert _ids(fp) == expected
    assert _evidence(fp, "wan", "ffn-up").observed == str(ffn)


def test_wan_image_cross_attention_means_wan21_i2v():
    fp, _ = _identify(B(_wan_native(5120, 13824, i2v=True), [0, 39]))
    assert (fp.family, fp.confidence) == ("wan", "high")
    assert _ids(fp) == ["wan2.1-i2v-14b"]


def test_wan_diffusers_names():
    fp, _ = _identify(B(_wan_diffusers(3072, 14336), [0, 29]), "peft")
    assert (fp.family, fp.confidence, _ids(fp)) == ("wan", "high", ["wan2.2-ti2v-5b"])


def test_wan_block_index_beyond_30_rules_out_the_small_sizes():
    # 1536 wide but a block 35: no size fits; the 1.3B variant is kept, with what speaks against it
    fp, _ = _identify(B(_wan_native(1536, 8960), [0, 35]))
    assert fp.family == "wan"
    small = next(c for c in fp.candidates if c.id == "wan2.1-t2v-1.3b")
    assert any("block index 30 or higher" in a for a in small.against)


def test_wan_and_anima_never_anchor_each_other():
    wan, _ = _identify(B(_wan_native(5120, 13824, i2v=True), [0, 39]), "comfy")
    anima, _ = _identify(B(ANIMA, [0, 27]), "comfy")
    assert "anima" not in wan.scores and wan.family == "wan"
    assert "wan" not in anima.scores and anima.family == "anima"


def test_hunyuan_dit_diffusers_blocks_are_not_wan():
    # diffusers HunyuanDiT also names its blocks blocks.N.attn1.to_q, at width 1408
    fp, _ = _identify(B([("blocks.{i}.attn1.to_q", 1408, 1408), ("blocks.{i}.attn2.to_k", 1408, 1024)], [0, 39]), "peft")
    assert {"hidden-out", "hidden-in"} <= _contradicted(fp, "wan")
    assert fp.family != "wan" or fp.confidence == "low"


def test_wan_with_cosmos_modules_is_contradicted():
    # a file mixing Wan names with Cosmos mlp.layer1 (the InvokeAI probe bug): Wan must not read it cleanly
    fp, _ = _identify(B(_wan_native(2048, 8192), [0]) + B(ANIMA, [0]))
    assert {"no-cosmos-attn", "no-cosmos-mlp"} <= _contradicted(fp, "wan")


def test_wan_claims_resolve_and_agree():
    claims = [Claim("metadata", "modelspec.architecture", "wan2.1/lora"),
              Claim("sidecar", "baseModel", "Wan Video 2.2 TI2V-5B")]
    fp, findings = _identify(B(_wan_native(3072, 14336), [0, 29]), claims=claims)
    assert _ids(fp) == ["wan2.2-ti2v-5b"]
    assert [(c.family, c.variant, c.verdict) for c in claims] == [
        ("wan", None, "agrees"), ("wan", "wan2.2-ti2v-5b", "agrees")]
    assert not [f for f in findings if f.code in ("LA300", "LA301", "LA302")]


def test_wan_variant_claim_the_widths_rule_out_keeps_the_evidence_against_it():
    claims = [Claim("sidecar", "baseModel", "Wan Video 1.3B t2v")]
    fp, _ = _identify(B(_wan_native(5120, 13824), [0, 39]), claims=claims)
    assert (claims[0].family, claims[0].variant) == ("wan", "wan2.1-t2v-1.3b")
    small = fp.candidates[0]
    assert small.id == "wan2.1-t2v-1.3b"  # a claimed variant is listed first, never dropped silently
    assert any("model width 1536 (observed 5120)" in a for a in small.against)
    assert any(c.id == "wan2.1-t2v-14b" and not c.against for c in fp.candidates)


# ------------------------------------------------------------------------------------------------------
# Anima


def test_anima_kohya_with_text_encoder():
    fp, _ = _identify(B(ANIMA + ANIMA_ADALN, [0, 13, 27]) + B(ANIMA_TE, [0, 27]))
    assert (fp.family, fp.confidence) == ("anima", "high")
    # without the LLM adapter the file cannot tell Anima from plain Cosmos-Predict2-2B
    assert _ids(fp) == ["anima", "anima-2.9b", "anima-3.8b", "cosmos-predict2-2b"]
    assert _evidence(fp, "anima", "cross-kv-in").outcome == "match"
    assert _evidence(fp, "anima", "te-qwen3").observed == "1024"


def test_anima_llm_adapter_rules_out_plain_cosmos():
    fp, _ = _identify(B(ANIMA, [0, 27]) + B(ANIMA_ADAPTER, [0, 5]), "comfy")
    assert (fp.family, fp.confidence) == ("anima", "high")
    assert _ids(fp) == ["anima", "anima-2.9b", "anima-3.8b"]


def test_anima_depth_expanded_blocks_narrow_the_variants():
    fp, _ = _identify(B(ANIMA, [0, 39]))
    assert fp.family == "anima" and fp.confidence == "high"
    assert _ids(fp) == ["anima-2.9b", "anima-3.8b"]


def test_anima_diffusers_names_beat_ltx_on_the_cross_attention_width():
    fp, _ = _identify(B(ANIMA_DIFFUSERS, [0, 27]), "peft")
    assert (fp.family, fp.confidence) == ("anima", "high")
    assert {"cross-kv-in", "no-cosmos-adaln"} <= _contradicted(fp, "ltx-video")


def test_anima_text_encoder_only_is_a_thin_guess():
    fp, findings = _identify(B(ANIMA_TE, [0, 27]))
    assert (fp.family, fp.confidence) == ("anima", "low")
    assert "sd2" not in fp.scores and "LA303" in [f.code for f in findings]


def test_sd2_text_encoder_does_not_anchor_anima():
    fp, _ = _identify(B([("te:text_model.encoder.layers.{i}.self_attn.q_proj", 1024, 1024)], [0, 22]))
    assert "anima" not in fp.scores


def test_anima_text_encoder_is_not_sd2():
    # the Qwen3-0.6B encoder is 1024 wide like SD2's CLIP-H, but its layers are not text_model_encoder_layers
    fp, _ = _identify(B(ANIMA, [0, 27]) + B(ANIMA_TE, [0, 27]))
    assert fp.family == "anima" and "sd2" not in fp.scores


# ------------------------------------------------------------------------------------------------------
# Qwen-Image


@pytest.mark.parametrize("fmt", ["kohya", "peft", "comfy"])
def test_qwen_image_full(fmt):
    fp, _ = _identify(B(QWEN, [0, 30, 59]) + [("txt_in", 3072, 3584)], fmt)
    assert (fp.family, fp.confidence, fp.partial) == ("qwen-image", "high", False)
    assert _ids(fp) == ["qwen-image", "qwen-image-edit", "qwen-image-edit-2509", "qwen-image-edit-2511",
                        "qwen-image-layered"]
    assert _evidence(fp, "qwen-image", "block-count").outcome == "match"
    # the diffusers FLUX.1 rules see the same joint-attention names and must be ruled out
    assert "no-qwen-names" in _contradicted(fp, "flux1")


def test_qwen_image_partial_is_a_lower_bound():
    fp, _ = _identify(B(QWEN, [0, 1, 2]), "peft")
    assert (fp.family, fp.partial) == ("qwen-image", True)
    count = _evidence(fp, "qwen-image", "block-count")
    assert (count.outcome, count.observed, count.expected) == ("lower-bound", "3 (highest index 2)", "60")


def test_qwen_image_variant_claim_goes_first():
    claims = [Claim("metadata", "modelspec.architecture", "Qwen-Image-Edit-2511/lora")]
    fp, _ = _identify(B(QWEN, [0, 59]), claims=claims)
    assert _ids(fp)[0] == "qwen-image-edit-2511" and claims[0].verdict == "agrees"


def test_flux_diffusers_file_is_not_qwen_image():
    flux = B([("transformer_blocks.{i}.attn.to_q", 3072, 3072), ("transformer_blocks.{i}.attn.add_k_proj", 3072, 3072),
              ("transformer_blocks.{i}.ff.net.0.proj", 12288, 3072)], [0, 18]) + \
        B([("single_transformer_blocks.{i}.attn.to_q", 3072, 3072), ("single_transformer_blocks.{i}.proj_mlp", 12288, 3072)],
          [0, 37])
    fp, _ = _identify(flux, "peft")
    assert fp.family != "qwen-image"
    assert {"no-flux-diffusers"} <= _contradicted(fp, "qwen-image")


# ------------------------------------------------------------------------------------------------------
# Z-Image and Lumina 2 (same S3-DiT names, told apart by widths and layer counts)


def test_z_image_native_with_refiners():
    mods = B(ZIMAGE, [0, 15, 29]) + [("context_refiner.1.attention.qkv", 11520, 3840),
                                      ("noise_refiner.0.feed_forward.w1", 10240, 3840), ("cap_embedder.1", 3840, 2560)]
    fp, _ = _identify(mods, "comfy")
    assert (fp.family, fp.confidence, fp.partial) == ("z-image", "high", False)
    assert _ids(fp) == ["z-image-turbo", "z-image-base", "ming-image"]
    assert {"hidden-in", "qkv-out", "ffn-up", "layer-count"} <= _contradicted(fp, "lumina2")


def test_z_image_diffusers_names_in_kohya_double_underscore_spelling():
    tensors = {k.replace("lora_unet_", "lora_unet__", 1): v for k, v in fpsynth.lora(B(ZIMAGE_DIFFUSERS, [0, 29])).items()}
    layers, _ = fpm.layers_from_tensors(tensors)
    fp, _ = fpm.identify(layers)
    assert (fp.family, fp.confidence) == ("z-image", "high")
    # feed_forward.w3 is shared with Lumina 2, but attention.to_q is Z-Image's own diffusers name
    assert {"no-zimage-names", "hidden-in", "layer-count"} <= _contradicted(fp, "lumina2")


def test_z_image_partial():
    fp, _ = _identify(B(ZIMAGE, [3, 4]))
    assert (fp.family, fp.partial) == ("z-image", True)
    assert _evidence(fp, "z-image", "layer-count").outcome == "lower-bound"


@pytest.mark.parametrize(("mods", "fmt"), [(B(LUMINA, [0, 25]), "kohya"), (B(LUMINA_DIFFUSERS, [0, 25]), "peft")])
def test_lumina2_both_namings(mods, fmt):
    fp, _ = _identify(mods + [("cap_embedder.1", 2304, 2304)], fmt)
    assert (fp.family, fp.confidence, fp.partial) == ("lumina2", "high", False)
    assert _ids(fp) == ["lumina-image-2.0"]
    assert _evidence(fp, "lumina2", "layer-count").outcome == "match"


def test_lumina2_qkv_width_is_not_read_as_z_image_hidden():
    # Lumina 2's fused qkv output (3840) equals Z-Image's width: Z-Image must still be contradicted
    fp, _ = _identify(B([("layers.{i}.attention.qkv", 3840, 2304)], [0, 25]))
    assert fp.family == "lumina2"
    assert {"hidden-in", "qkv-out"} <= _contradicted(fp, "z-image")


def test_lumina2_claim_on_z_image_tensors_is_a_contradiction():
    claims = [Claim("metadata", "ss_base_model_version", "lumina2")]
    fp, findings = _identify(B(ZIMAGE, [0, 29]), claims=claims)
    assert fp.family == "z-image" and fp.confidence == "high"
    assert claims[0].family == "lumina2" and claims[0].verdict == "contradicts"
    assert [f.code for f in findings if f.code == "LA300"] == ["LA300"]


# ------------------------------------------------------------------------------------------------------
# Krea-2


def test_krea2_kohya_capture_layout():
    fp, _ = _identify(B(KREA2, [0, 27]) + KREA2_TOP)
    assert (fp.family, fp.confidence, fp.partial) == ("krea2", "high", False)
    assert _ids(fp) == ["krea-2-turbo", "krea-2-base"]
    assert _evidence(fp, "krea2", "kv-out").observed == "1536"


def test_krea2_diffusers_against_qwen_and_flux2():
    fp, _ = _identify(B(KREA2_DIFFUSERS, [0, 27]), "peft")
    assert (fp.family, fp.confidence) == ("krea2", "high")
    assert {"hidden-in", "no-krea2-diffusers"} <= _contradicted(fp, "qwen-image")


def test_flux2_dev_diffusers_attention_is_not_krea2():
    # FLUX.2 [dev] is 6144 wide too, but has no attn.to_gate / ff.gate and 6144-wide keys
    flux2 = B([("transformer_blocks.{i}.attn.to_q", 6144, 6144), ("transformer_blocks.{i}.attn.to_k", 6144, 6144),
               ("transformer_blocks.{i}.attn.add_k_proj", 6144, 6144)], [0, 7])
    fp, _ = _identify(flux2, "peft")
    assert "krea2" not in fp.scores and fp.family != "qwen-image"


def test_krea2_partial():
    fp, _ = _identify(B(KREA2, [5, 6]))
    assert (fp.family, fp.partial) == ("krea2", True)


def test_krea2_is_not_wan_or_anima():
    fp, _ = _identify(B(KREA2, [0, 27]))
    assert not {"wan", "anima"} & set(fp.scores)


# ------------------------------------------------------------------------------------------------------
# LTX-Video


def test_ltx_2b_comfy_native():
    fp, _ = _identify(B(_ltx(2048), [0, 27]) + [("patchify_proj", 2048, 128)], "comfy")
    assert (fp.family, fp.confidence) == ("ltx-video", "high")
    assert _ids(fp) == ["ltxv-2b"]
    assert "cross-kv-in" in _contradicted(fp, "anima")


def test_ltx_13b_and_ltx2_video_only_are_shape_identical():
    fp, _ = _identify(B(_ltx(4096), [0, 47]), "peft")
    assert (fp.family, fp.confidence) == ("ltx-video", "high")
    assert _ids(fp) == ["ltxv-13b", "ltx-2"]


def test_ltx2_audio_stream_picks_ltx2():
    fp, _ = _identify(B(_ltx(4096) + LTX2_AUDIO, [0, 47]) + [("audio_adaln_single.linear", 18432, 2048)], "comfy")
    assert (fp.family, fp.confidence) == ("ltx-video", "high")
    assert _ids(fp) == ["ltx-2"]


def test_ltx_self_attention_only_is_shape_identical_to_diffusers_anima():
    # attn1 and the MLP are 2048 / 8192 wide over 28 blocks in both; only attn2 k/v or Cosmos' norms differ
    mods = B([("transformer_blocks.{i}.attn1.to_q", 2048, 2048), ("transformer_blocks.{i}.ff.net.0.proj", 8192, 2048)],
             [0, 27])
    fp, findings = _identify(mods, "peft")
    assert fp.family == "ltx-video" and fp.confidence == "medium"
    assert "anima" in _ids(fp)
    assert "LA304" in [f.code for f in findings]


def test_pixart_widths_contradict_ltx():
    pixart = B([("transformer_blocks.{i}.attn1.to_q", 1152, 1152), ("transformer_blocks.{i}.attn2.to_k", 1152, 4096),
                ("transformer_blocks.{i}.ff.net.0.proj", 4608, 1152)], [0, 27])
    fp, _ = _identify(pixart, "peft")
    assert {"hidden-out", "ff-up"} <= _contradicted(fp, "ltx-video")
    assert fp.family != "ltx-video" or fp.confidence == "low"


# ------------------------------------------------------------------------------------------------------
# Kandinsky 5


@pytest.mark.parametrize(("dim", "last", "expected"), [
    (1792, 31, "kandinsky-5-video-lite"), (2560, 49, "kandinsky-5-image-lite"), (4096, 59, "kandinsky-5-video-pro"),
])
def test_kandinsky5_sizes(dim, last, expected):
    mods = B(_k5(dim), [0, last]) + [("text_transformer_blocks.1.self_attention.to_query", dim, dim)]
    fp, _ = _identify(mods)
    assert (fp.family, fp.confidence) == ("kandinsky5", "high")
    assert _ids(fp) == [expected]


def test_kandinsky5_lite_width_with_pro_depth_keeps_what_is_against_it():
    fp, _ = _identify(B(_k5(1792), [0, 40]))
    lite = next(c for c in fp.candidates if c.id == "kandinsky-5-video-lite")
    assert any("visual block index 32 or higher" in a for a in lite.against)


def test_kandinsky5_claims():
    claims = [Claim("metadata", "modelspec.architecture", "Kandinsky-5/lora")]
    fp, findings = _identify(B(_k5(1792), [0, 31]), claims=claims)
    assert (claims[0].family, claims[0].verdict) == ("kandinsky5", "agrees")
    assert fp.family == "kandinsky5" and not [f for f in findings if f.code in ("LA300", "LA301", "LA302")]
