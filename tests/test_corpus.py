"""The synthetic corpus: module tables against the real model classes, key spellings, the safetensors writer
against the safetensors library and torch, and every planted spectrum against a dense float64 SVD."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
from conftest import real_fixtures_dir

from audit import archs, corpus

safetensors_numpy = pytest.importorskip("safetensors.numpy")

REAL = real_fixtures_dir()


def _read_header(path) -> tuple[int, dict]:
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# LyCORIS factorisations


def test_factorization_hand_examples():
    f = corpus.factorization
    # factor divides the dimension: (min, max) of (factor, d / factor)
    assert f(3072, 16) == (16, 192)
    assert f(360, 8) == (8, 45)
    assert f(128, 2) == (2, 64)
    assert f(1024, 16) == (16, 64)
    # -1: walk divisors upwards while the sum m + d/m does not grow
    assert f(320, -1) == (16, 20)  # 320 = 16 * 20, sqrt(320) = 17.9
    assert f(768, -1) == (24, 32)
    assert f(3072, -1) == (48, 64)
    assert f(1024, -1) == (32, 32)
    assert f(127, -1) == (1, 127)  # prime
    assert f(360, -1) == (18, 20)
    assert f(12, -1) == (3, 4)
    # factor that does not divide: the walk stops before m passes the factor
    assert f(250, 8) == (5, 50)  # divisors 1, 2, 5 <= 8; 10 > 8
    assert f(250, 4) == (2, 125)
    assert f(360, 16) == (15, 24)  # 15 divides 360 and 15 <= 16; 18 > 16
    assert f(21504, -1) == (128, 168)


def test_factorization_16_64_is_most_balanced():
    # 64 does not divide 16, so the limit is 64 and the walk reaches the balanced pair
    assert corpus.factorization(16, 64) == (4, 4)


def _factorization_reference(d: int, factor: int) -> tuple[int, int]:
    if factor > 0 and d % factor == 0:
        return tuple(sorted((factor, d // factor)))
    limit = d if factor <= 0 else factor
    best = None
    for m in range(1, d + 1):
        if d % m or m > limit:
            continue
        if best is None or m + d // m < sum(best):
            best = (m, d // m)
    return tuple(sorted(best))


def test_factorization_matches_brute_force():
    for d in list(range(1, 400)) + [640, 1280, 1536, 2048, 2560, 4096, 5120, 9216, 10240, 12288, 15360, 18432]:
        for factor in (-1, 2, 3, 4, 6, 8, 12, 16, 32, 100):
            got = corpus.factorization(d, factor)
            assert got == _factorization_reference(d, factor), (d, factor)
            assert got[0] * got[1] == d and got[0] <= got[1]


def test_power2factorization():
    p = corpus.power2factorization
    assert p(1024, 4) == (4, 256)
    assert p(320, 10) == (10, 32)  # 320 = 10 * 2**5
    assert p(3072, 8) == (6, 512)
    assert p(21504, 64) == (42, 512)
    with pytest.raises(ValueError):
        p(320, 4)  # needs an even divisor that is a multiple of 5


# ---------------------------------------------------------------------------------------------------------
# writer


def test_writer_all_dtypes_roundtrip(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5)) * 10
    tensors = {
        "f64": x,
        "f32": x.astype(np.float32),
        "f16": x.astype(np.float16),
        "bf16": x,
        "e4m3": x,
        "e5m2": x,
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3) - 3,
        "i32": np.array([-7, 0, 2**31 - 1], dtype=np.int32),
        "u8": np.array([0, 255, 7], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    dtypes = {"bf16": "BF16", "e4m3": "F8_E4M3", "e5m2": "F8_E5M2", "scalar": "F32"}
    path = tmp_path / "all.safetensors"
    n = corpus.write_safetensors(path, tensors, dtypes, {"k": "v", "ü": "ß"})
    assert n == path.stat().st_size
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v", "ü": "ß"}
        got = {k: f.get_tensor(k) for k in f.keys()}
    assert got["f64"].dtype == torch.float64 and np.array_equal(got["f64"].numpy(), x)
    assert np.array_equal(got["f32"].numpy(), x.astype(np.float32))
    assert np.array_equal(got["f16"].numpy(), x.astype(np.float16))
    assert got["bf16"].dtype == torch.bfloat16
    assert torch.equal(got["bf16"], torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16))
    assert torch.equal(
        got["e4m3"].view(torch.uint8), torch.from_numpy(x.astype(np.float32)).to(torch.float8_e4m3fn).view(torch.uint8)
    )
    assert torch.equal(
        got["e5m2"].view(torch.uint8), torch.from_numpy(x.astype(np.float32)).to(torch.float8_e5m2).view(torch.uint8)
    )
    assert np.array_equal(got["i64"].numpy(), tensors["i64"])
    assert np.array_equal(got["i32"].numpy(), tensors["i32"])
    assert np.array_equal(got["u8"].numpy(), tensors["u8"])
    assert np.array_equal(got["bool"].numpy(), tensors["bool"])
    assert got["scalar"].shape == () and float(got["scalar"]) == 2.5
    assert tuple(got["empty"].shape) == (0, 3)
    # our decoder agrees with torch's float conversion of the stored codes
    for name in ("bf16", "e4m3", "e5m2"):
        stored = corpus.encode(tensors[name], dtypes[name])
        assert np.array_equal(corpus.decode(stored, dtypes[name]), got[name].to(torch.float64).numpy())


def test_header_layout(tmp_path):
    path = tmp_path / "h.safetensors"
    tensors = {"b": np.ones(3, np.float16), "a": np.ones(1, np.float16), "c": np.ones(2, np.float64), "d": np.int64(4)}
    corpus.write_safetensors(path, tensors, metadata={"m": "1"})
    raw = path.read_bytes()
    n, header = _read_header(path)
    assert n % 8 == 0
    text = raw[8 : 8 + n].decode("utf-8")
    assert text.rstrip(" ") == text.rstrip() and text.startswith("{") and len(text) - len(text.rstrip(" ")) < 8
    assert list(header) == ["__metadata__", "c", "d", "a", "b"]  # metadata, then item size desc, then name
    offsets = [header[k]["data_offsets"] for k in list(header)[1:]]
    assert offsets[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:], strict=False))
    assert offsets[-1][1] == len(raw) - 8 - n
    assert header["d"] == {"dtype": "I64", "shape": [], "data_offsets": [16, 24]}
    # given order
    corpus.write_safetensors(path, tensors, canonical=False)
    assert list(_read_header(path)[1]) == ["b", "a", "c", "d"]
    assert corpus.serialize(tensors, canonical=False) == path.read_bytes()


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        corpus.write_safetensors(tmp_path / "x", {"__metadata__": np.zeros(1)})
    with pytest.raises(ValueError):
        corpus.write_safetensors(tmp_path / "x", {"a": np.zeros(1)}, metadata={"k": 1})
    with pytest.raises(ValueError):
        corpus.write_safetensors(tmp_path / "x", {"a": np.zeros(1, np.uint16)})  # BF16 bits need dtypes=
    with pytest.raises(ValueError):
        corpus.encode(np.array([300]), "U8")


def test_bf16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    # exact ties (low half 0x8000) and their neighbours, infinities, signed zero
    ties = (rng.integers(0, 2**16, 500, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000
    extra = np.array([np.inf, -np.inf, 0.0, -0.0, 3.4e38, 1e-45], np.float32)
    x = np.concatenate([x[np.isfinite(x)], ties.view(np.float32), extra])
    ours = corpus.encode(x, "BF16")
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, ref)
    assert (corpus.encode(np.array([np.nan], np.float32), "BF16")[0] & 0x7FFF) == 0x7FC0


@pytest.mark.parametrize("fmt,tdtype", [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")])
def test_fp8_rounding_matches_torch(fmt, tdtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grid = np.concatenate(
        [
            rng.standard_normal(20000) * 100,
            rng.standard_normal(5000) * 1e-3,
            np.exp2(rng.uniform(-24, 18, 5000)) * rng.choice([-1, 1], 5000),
            [
                0.0,
                -0.0,
                447,
                448,
                449,
                463.9,
                464,
                465,
                480,
                1e4,
                57344,
                61439,
                61440,
                61441,
                65536,
                1e9,
                np.inf,
                -np.inf,
                2**-10,
                2**-9 * 1.5,
                2**-17,
                2**-16 * 1.5,
            ],
        ]
    ).astype(np.float32)
    # every exact midpoint between consecutive codes
    vals = corpus.decode(np.arange(256, dtype=np.uint8), fmt)
    pos = np.sort(vals[np.isfinite(vals) & (vals >= 0)])
    grid = np.concatenate([grid, ((pos[1:] + pos[:-1]) / 2).astype(np.float32)])
    ours = corpus.encode(grid, fmt)
    ref = torch.from_numpy(grid).to(getattr(torch, tdtype)).view(torch.uint8).numpy()
    assert np.array_equal(ours, ref)
    nan_code = corpus.encode(np.array([np.nan], np.float32), fmt)[0]
    assert np.isnan(corpus.decode(np.array([nan_code], np.uint8), fmt)[0])


# ---------------------------------------------------------------------------------------------------------
# module tables: counts (formats.md) and the real model classes


def test_module_counts_match_formats_md():
    def count(family, comp, naming, targets):
        return len(archs.select(archs.modules(family, comp, naming), targets))

    assert count("sd1", "unet", "diffusers", "blocks") == 192
    assert count("sd1", "te", "hf-clip", "blocks") == 72
    assert count("sdxl", "unet", "sgm", "blocks") == 722
    assert count("sdxl", "unet", "diffusers", "blocks") == 722
    assert count("sdxl", "te1", "hf-clip", "blocks") == 72
    assert count("sdxl", "te2", "hf-clip", "blocks") == 192
    assert count("sd2", "te", "hf-clip", "blocks") == 23 * 6
    assert count("flux1", "te3", "hf-t5", "blocks") == 24 * 7
    # FLUX: 19 double blocks x 10 linears + 38 single blocks x 3
    assert count("flux1", "transformer", "bfl", "blocks") == 19 * 10 + 38 * 3
    # SD3: 23 full joint blocks x 10 linears, the last one context-pre-only (x_block 5 + context qkv/adaLN)
    assert count("sd3", "transformer", "bfl", "blocks") == 23 * 10 + 7
    sd1_proj = archs.modules("sd1", "unet", "diffusers")[3]
    assert sd1_proj.path == "down_blocks.0.attentions.0.proj_in" and sd1_proj.kernel == (1, 1)
    sd2_proj = [m for m in archs.modules("sd2", "unet", "diffusers") if m.path.endswith("proj_in")][0]
    assert sd2_proj.kind == "linear"


def test_kohya_key_counts_match_formats_md():
    s = corpus.build("sdxl", "kohya", targets="blocks", dtype="F16")
    unet = [k for k in s.tensors if k.startswith("lora_unet_")]
    te1 = [k for k in s.tensors if k.startswith("lora_te1_")]
    te2 = [k for k in s.tensors if k.startswith("lora_te2_")]
    assert (len(unet), len(te1), len(te2)) == (2166, 216, 576)
    s1 = corpus.build("sd1", "kohya", targets="blocks", dtype="F16")
    assert sum(k.startswith("lora_unet_") for k in s1.tensors) == 576
    assert sum(k.startswith("lora_te_") for k in s1.tensors) == 216
    assert len(s1.truth) == 192 + 72


def test_flux_and_sd3_dimensions():
    flux = {m.path: m for m in archs.modules("flux1", "transformer", "bfl")}
    assert flux["double_blocks.18.img_attn.qkv"].weight_shape == (9216, 3072)
    assert flux["single_blocks.37.linear1"].weight_shape == (21504, 3072)
    assert flux["single_blocks.37.linear2"].weight_shape == (3072, 15360)
    assert flux["double_blocks.0.img_mlp.0"].weight_shape == (12288, 3072)
    assert flux["double_blocks.0.img_mod.lin"].weight_shape == (18432, 3072)
    assert flux["single_blocks.0.modulation.lin"].weight_shape == (9216, 3072)
    assert flux["txt_in"].weight_shape == (3072, 4096)
    assert flux["vector_in.in_layer"].weight_shape == (3072, 768)
    assert flux["img_in"].weight_shape == (3072, 64)
    assert "double_blocks.19.img_attn.qkv" not in flux and "single_blocks.38.linear1" not in flux
    sd3 = {m.path: m for m in archs.modules("sd3", "transformer", "bfl")}
    assert sd3["joint_blocks.0.x_block.attn.qkv"].weight_shape == (4608, 1536)
    assert "joint_blocks.23.context_block.attn.proj" not in sd3
    assert sd3["joint_blocks.23.context_block.adaLN_modulation.1"].weight_shape == (3072, 1536)
    assert sd3["joint_blocks.22.context_block.adaLN_modulation.1"].weight_shape == (9216, 1536)


_UNET_CONFIGS = {
    "sd1": dict(cross_attention_dim=768, attention_head_dim=8),
    "sd2": dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
    "sdxl": dict(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ),
}
_SD3_CONFIG = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)
_FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


def _torch_modules(model, norms=True):
    import torch.nn as nn

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            out[name] = ("linear", tuple(mod.weight.shape))
        elif isinstance(mod, nn.Conv2d):
            out[name] = ("conv", tuple(mod.weight.shape))
        elif norms and (isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) or type(mod).__name__ == "T5LayerNorm"):
            if getattr(mod, "weight", None) is not None:
                out[name] = ("norm", tuple(mod.weight.shape))
    return out


def _ours(family, comp, naming, norms=True):
    return {m.path: (m.kind, m.weight_shape) for m in archs.modules(family, comp, naming, include_norms=norms)}


@pytest.fixture(scope="module")
def diffusers_models():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        models = {f: diffusers.UNet2DConditionModel.from_config(c) for f, c in _UNET_CONFIGS.items()}
        models["sd3"] = diffusers.SD3Transformer2DModel.from_config(_SD3_CONFIG)
        models["flux1"] = diffusers.FluxTransformer2DModel.from_config(_FLUX_CONFIG)
    return models


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sd3", "flux1"])
def test_diffusers_names_match_real_models(diffusers_models, family):
    comp = archs.denoiser(family)
    theirs = _torch_modules(diffusers_models[family])
    ours = _ours(family, comp, "diffusers")
    assert ours == theirs
    if comp == "unet":  # the UNet registration order is stable across diffusers versions
        assert list(ours) == list(theirs)


def test_text_encoder_names_match_transformers():
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    clip = dict(hidden_act="quick_gelu", max_position_embeddings=77, vocab_size=49408)
    with torch.device("meta"):
        models = {
            ("sd1", "te"): tf.CLIPTextModel(
                tf.CLIPTextConfig(
                    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, **clip
                )
            ),
            ("sd2", "te"): tf.CLIPTextModel(
                tf.CLIPTextConfig(
                    hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, **clip
                )
            ),
            ("sdxl", "te2"): tf.CLIPTextModelWithProjection(
                tf.CLIPTextConfig(
                    hidden_size=1280,
                    intermediate_size=5120,
                    num_hidden_layers=32,
                    num_attention_heads=20,
                    projection_dim=1280,
                    **clip,
                )
            ),
            ("flux1", "te3"): tf.T5EncoderModel(
                tf.T5Config(
                    d_model=4096,
                    d_ff=10240,
                    d_kv=64,
                    num_heads=64,
                    num_layers=24,
                    feed_forward_proj="gated-gelu",
                    vocab_size=32128,
                    is_encoder_decoder=False,
                    use_cache=False,
                )
            ),
        }
    for (family, comp), model in models.items():
        theirs = _torch_modules(model)
        theirs.pop("text_projection", None)  # the projection head is not a LoRA target
        # transformers >= 5 flattens CLIPTextModel (no "text_model." level); checkpoints keep the prefix
        theirs = {
            (
                "text_model." + k
                if k.startswith(("encoder.layers", "final_layer_norm")) and archs.namings(family, comp) == ("hf-clip",)
                else k
            ): v
            for k, v in theirs.items()
        }
        assert _ours(family, comp, archs.namings(family, comp)[0]) == theirs, (family, comp)
    # the same CLIP-L tower everywhere it is used
    for family, comp in (("sdxl", "te1"), ("sd3", "te1"), ("flux1", "te1")):
        assert _ours(family, comp, "hf-clip") == _ours("sd1", "te", "hf-clip")
    assert _ours("sd3", "te2", "hf-clip") == _ours("sdxl", "te2", "hf-clip")
    assert _ours("sd3", "te3", "hf-t5") == _ours("flux1", "te3", "hf-t5")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_sgm_names_convert_to_diffusers(diffusers_models, family):
    """diffusers' own LDM -> diffusers checkpoint converter maps our SGM names onto the model's names."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    ckpt = {}
    for m in archs.modules(family, "unet", "sgm", include_norms=True):
        ckpt[f"model.diffusion_model.{m.path}.weight"] = m.weight_shape
        ckpt[f"model.diffusion_model.{m.path}.bias"] = (m.out_features,)
    config = dict(layers_per_block=2)
    if family == "sdxl":
        config["addition_embed_type"] = "text_time"
    converted = convert_ldm_unet_checkpoint(ckpt, config)
    weights = {k[: -len(".weight")]: v for k, v in converted.items() if k.endswith(".weight")}
    theirs = {k: v[1] for k, v in _torch_modules(diffusers_models[family]).items()}
    assert weights == theirs
    assert len(converted) == len(ckpt)  # every SGM tensor was consumed exactly once


@pytest.mark.parametrize("family", ["sd3", "flux1"])
def test_bfl_names_convert_to_diffusers(diffusers_models, family):
    """diffusers' single-file converters (original -> diffusers) consume exactly our original-name modules."""
    import torch
    from diffusers.loaders import single_file_utils as sfu

    ckpt = {}
    for m in archs.modules(family, "transformer", "bfl"):
        ckpt[f"{m.path}.weight"] = torch.empty(m.weight_shape, device="meta")
        ckpt[f"{m.path}.bias"] = torch.empty((m.out_features,), device="meta")
    if family == "flux1":
        for i in range(19):
            for s in ("img", "txt"):
                for q in ("query", "key"):
                    ckpt[f"double_blocks.{i}.{s}_attn.norm.{q}_norm.scale"] = torch.empty(128, device="meta")
        for i in range(38):
            for q in ("query", "key"):
                ckpt[f"single_blocks.{i}.norm.{q}_norm.scale"] = torch.empty(128, device="meta")
        converted = sfu.convert_flux_transformer_checkpoint_to_diffusers(ckpt)
    else:
        ckpt["pos_embed"] = torch.empty((1, 192 * 192, 1536), device="meta")
        converted = sfu.convert_sd3_transformer_checkpoint_to_diffusers(ckpt)
    assert ckpt == {}  # nothing left over: no invented module
    theirs = _torch_modules(diffusers_models[family], norms=False)
    got = {k[: -len(".weight")]: tuple(v.shape) for k, v in converted.items() if k.endswith(".weight")}
    extra = {k for k in got if k not in theirs}
    assert all(k.split(".")[-1] in ("norm_q", "norm_k", "norm_added_q", "norm_added_k") for k in extra), extra
    assert {k: v for k, v in got.items() if k in theirs} == {k: v[1] for k, v in theirs.items()}


# ---------------------------------------------------------------------------------------------------------
# real files: names and module order


def _real_header(name):
    path = REAL / name
    if not path.exists():
        pytest.skip("real fixtures not available")
    return _read_header(path)[1]


def test_kohya_sd1_locon_stems_match_real_lycoris_file():
    header = _real_header("lycoris-lokr-falcon4.safetensors")
    header.pop("__metadata__", None)
    real = {k.split(".")[0] for k in header}
    ours = set(corpus.build("sd1", "kohya", adapter="lokr", targets="all", dtype="F16").truth)
    assert ours == real


def test_cloneofsimo_order_matches_real_file():
    header = _real_header("cloneofsimo-analog_svd_rank4.safetensors")
    md = header.pop("__metadata__")
    assert json.loads(md["unet"]) == ["CrossAttention", "Attention", "GEGLU"]
    synth = corpus.build("sd1", "cloneofsimo", targets="blocks", dtype="F16")
    assert json.loads(synth.metadata["unet"]) == json.loads(md["unet"])
    shapes = {k: v["shape"] for k, v in header.items()}
    ours = {k: list(v.shape) for k, v in synth.tensors.items()}
    unet = lambda d: {k: v for k, v in d.items() if k.startswith("unet:")}  # noqa: E731
    assert unet(ours) == unet(shapes)  # same indices, same shapes: same module order
    te = {
        k: v
        for k, v in corpus.build("sd1", "cloneofsimo", targets="attn", text_encoders=True).tensors.items()
        if k.startswith("text_encoder:")
    }
    assert {k: list(v.shape) for k, v in te.items()} == {
        k: v for k, v in shapes.items() if k.startswith("text_encoder:")
    }


def test_diffusers_legacy_names_match_real_file():
    header = _real_header("catundchat-sd15.safetensors")
    header.pop("__metadata__", None)
    synth = corpus.build("sd1", "diffusers-legacy", targets="attn", text_encoders=False)
    ours = {k[len("unet.") :]: list(v.shape) for k, v in synth.tensors.items()}
    assert ours == {k: v["shape"] for k, v in header.items()}


# ---------------------------------------------------------------------------------------------------------
# key spellings and metadata


def test_key_spellings():
    def keys(*a, **kw):
        return corpus.build(*a, max_modules=400, **kw).tensors

    k = corpus.build("sdxl", "kohya", targets="blocks").tensors
    assert k["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"].shape == (4, 640)
    assert k["lora_unet_middle_block_1_transformer_blocks_9_attn2_to_k.lora_down.weight"].shape == (4, 2048)
    assert "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2.alpha" in k
    k = corpus.build("flux1", "kohya", targets="blocks").tensors
    assert k["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"].shape == (9216, 4)
    assert k["lora_unet_single_blocks_37_linear1.lora_up.weight"].shape == (21504, 4)
    assert k["lora_unet_single_blocks_37_linear2.lora_down.weight"].shape == (4, 15360)
    assert k["lora_te1_text_model_encoder_layers_11_mlp_fc1.lora_up.weight"].shape == (3072, 4)
    assert k["lora_te3_encoder_block_23_layer_1_DenseReluDense_wi_0.lora_up.weight"].shape == (10240, 4)
    k = corpus.build("flux1", "onetrainer", targets="blocks", rank=2).tensors
    assert "lora_transformer_single_transformer_blocks_0_attn_to_k.lora_down.weight" in k
    assert "lora_te2_encoder_block_0_layer_0_SelfAttention_q.alpha" in k  # OneTrainer: T5 is te2
    k = keys("flux1", "diffusers-peft")
    assert k["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"].shape == (4, 3072)
    k = corpus.build("sdxl", "diffusers-peft", targets="te-only").tensors
    assert "text_encoder_2.text_model.encoder.layers.31.self_attn.out_proj.lora_B.weight" in k
    k = keys("sd1", "diffusers-legacy", text_encoders=True)
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight" in k
    k = corpus.build("sd1", "diffusers-legacy", targets="te-only").tensors
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight" in k
    k = keys("flux1", "xlabs")
    assert k["double_blocks.0.processor.qkv_lora1.down.weight"].shape == (4, 3072)
    assert k["double_blocks.18.processor.proj_lora2.up.weight"].shape == (3072, 4)
    assert len(k) == 19 * 4 * 2
    k = keys("flux1", "bfl-control")
    assert k["img_in.lora_A.weight"].shape == (4, 128)
    assert k["double_blocks.0.img_attn.qkv.lora_B.bias"].shape == (9216,)
    assert k["double_blocks.0.img_attn.norm.query_norm.scale"].shape == (128,)
    assert "single_blocks.0.norm.key_norm.scale" in k
    k = keys("flux1", "ai-toolkit")
    assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight" in k and not any(x.endswith("alpha") for x in k)
    k = keys("flux1", "comfy-native")
    assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight" in k
    k = keys("sd1", "comfy-native", targets="blocks")
    assert "diffusion_model.input_blocks.1.1.proj_in.lora_down.weight" in k
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.k_proj.alpha" in k
    k = keys("flux1", "simpletuner-lycoris", adapter="lokr")
    assert "lycoris_transformer_blocks_0_attn_to_q.lokr_w1" in k
    k = keys("sd2", "peft", adapter="dora")
    assert k[
        "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"
    ].shape == (320,)
    k = keys("sd1", "cloneofsimo")
    assert k["unet:0:down"].shape == (4, 320) and k["text_encoder:0:up"].shape == (768, 4)
    assert set(corpus.build("sd1", "textual-inversion", rank=3).tensors) == {"emb_params"}
    ti = corpus.build("sdxl", "textual-inversion", rank=2).tensors
    assert ti["clip_l"].shape == (2, 768) and ti["clip_g"].shape == (2, 1280)


def test_dora_magnitude_axes():
    def dora(fmt, fam="sd1", **kw):
        s = corpus.build(fam, fmt, adapter="dora", max_modules=1, **kw)
        t = next(iter(s.truth.values()))
        return t, s.tensors[t.parts["dora_scale"]].shape

    t, shape = dora("kohya", targets="blocks")  # proj_in, a 1x1 conv [320, 320, 1, 1]
    assert t.kernel == (1, 1) and shape == (320, 1, 1, 1)
    t, shape = dora("kohya", fam="flux1", targets="attn")
    assert shape == (9216, 1)
    t, shape = dora("onetrainer", fam="flux1", targets="attn")
    assert shape == (1, 3072)
    t, shape = dora("diffusers-peft", fam="flux1", targets="attn")
    assert shape == (3072,)
    assert t.delta_basis == "direction"


def test_metadata():
    md = corpus.build("sdxl", "kohya", rank=8, max_modules=2).metadata
    assert md["ss_network_module"] == "networks.lora" and md["ss_network_dim"] == "8"
    assert float(md["ss_network_alpha"]) == 4.0 and md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    md = corpus.build("flux1", "kohya", adapter="lokr", factor=8, max_modules=2).metadata
    assert md["ss_network_module"] == "lycoris.kohya" and md["ss_base_model_version"] == "flux1"
    assert json.loads(md["ss_network_args"]) == {"algo": "lokr", "factor": "8"}
    assert md["modelspec.architecture"] == "flux-1-dev/lora"
    md = corpus.build("sd1", "kohya", targets="all", max_modules=30).metadata
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2.0"}
    md = corpus.build("flux1", "diffusers-peft", rank=16, alpha=8, max_modules=3).metadata
    cfg = json.loads(md["lora_adapter_metadata"])
    assert cfg["transformer.r"] == 16 and cfg["transformer.lora_alpha"] == 8.0
    assert cfg["transformer.target_modules"] == ["to_k", "to_q", "to_v"]
    md = corpus.build("flux1", "ai-toolkit", max_modules=2).metadata
    assert json.loads(md["software"])["name"] == "ai-toolkit"
    md = corpus.build("sd1", "cloneofsimo", rank=2, targets="attn").metadata
    assert md["unet:127:rank"] == "2" and md["text_encoder:47:rank"] == "2"
    assert "unet:128:rank" not in md
    md = corpus.build("sd1", "kohya", max_modules=1, metadata={"ss_network_dim": "99", "extra": "x"}).metadata
    assert md["ss_network_dim"] == "99" and md["extra"] == "x"
    s = corpus.build("sd2", "peft", max_modules=2)
    assert s.adapter_config["peft_type"] == "LORA" and s.adapter_config["lora_alpha"] == 4.0
    assert s.metadata == {"format": "pt"}


def test_invalid_combinations():
    bad = [
        dict(family="sd1", fmt="xlabs"),
        dict(family="sdxl", fmt="cloneofsimo"),
        dict(family="flux1", fmt="diffusers-legacy"),
        dict(family="flux1", fmt="textual-inversion"),
        dict(family="sd1", fmt="bfl-control"),
        dict(family="sd1", fmt="diffusers-legacy", adapter="loha"),
        dict(family="sd1", fmt="diffusers-peft", adapter="lokr"),
        dict(family="flux1", fmt="xlabs", targets="blocks"),
        dict(family="flux1", fmt="xlabs", alpha=4.0),
        dict(family="sd1", fmt="kohya", adapter="ia3", alpha=1.0),
        dict(family="flux1", fmt="kohya", adapter="norm"),
        dict(family="flux1", fmt="peft", targets="te-only"),
        dict(family="sd1", fmt="kohya", text_encoders=["te3"]),
        dict(family="flux1", fmt="diffusers-peft", text_encoders=["te3"]),
        dict(family="sd5", fmt="kohya"),
        dict(family="sd1", fmt="kohya", dtype="I32"),
        dict(family="sd1", fmt="kohya", rank=0),
        dict(family="sd1", fmt="kohya", spectrum=lambda r: np.ones(r + 1), max_modules=1),
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            corpus.build(kw.pop("family"), kw.pop("fmt"), **kw)


def test_lokr_shapes_follow_lycoris_rules():
    s = corpus.build("sd1", "kohya", adapter="lokr", targets="te-only", rank=4)
    t = s.truth["lora_te_text_model_encoder_layers_0_mlp_fc1"]  # [3072, 768]
    assert t.extra["factors"] == [[48, 24], [64, 32]]
    assert s.tensors[t.parts["lokr_w1"]].shape == (48, 24)
    assert s.tensors[t.parts["lokr_w2_a"]].shape == (64, 4)
    assert s.tensors[t.parts["lokr_w2_b"]].shape == (4, 32)
    assert t.scale == 0.5
    # rank >= max(out_k, in_n) / 2 forces a full w2; with a full w1 the scale is 1 and alpha = rank
    s = corpus.build("sd1", "kohya", adapter="lokr", targets="te-only", rank=32, max_modules=1)
    t = next(iter(s.truth.values()))
    assert "lokr_w2" in t.parts and t.scale == 1.0 and t.alpha == 32.0
    s = corpus.build("sd1", "kohya", adapter="lokr", targets="te-only", rank=2, decompose_both=True, factor=16)
    t = s.truth["lora_te_text_model_encoder_layers_0_mlp_fc1"]
    assert t.extra["factors"] == [[16, 16], [192, 48]]
    assert s.tensors[t.parts["lokr_w1_a"]].shape == (16, 2)
    # conv: w2_b folds the kernel in
    s = corpus.build("sd1", "kohya", adapter="lokr", targets="all", max_modules=30)
    t = s.truth["lora_unet_down_blocks_0_resnets_0_conv1"]  # [320, 320, 3, 3]
    assert s.tensors[t.parts["lokr_w1"]].shape == (16, 16)
    assert s.tensors[t.parts["lokr_w2_b"]].shape == (4, 20 * 9)


def test_scale_conventions():
    t = next(iter(corpus.build("sd1", "kohya", rank=8, max_modules=1).truth.values()))
    assert (t.alpha, t.scale) == (4.0, 0.5)
    t = next(iter(corpus.build("sd1", "kohya", rank=8, alpha=1, max_modules=1).truth.values()))
    assert t.scale == 1 / 8
    t = next(iter(corpus.build("sd1", "kohya", rank=4, alpha=0.1, dtype="BF16", max_modules=1).truth.values()))
    assert t.alpha == float(corpus.round_to(0.1, "BF16")) and t.scale == t.alpha / 4  # stored alpha rules
    t = next(iter(corpus.build("flux1", "xlabs", max_modules=1).truth.values()))
    assert (t.alpha, t.scale) == (None, 1.0)
    t = next(iter(corpus.build("sd2", "peft", max_modules=1).truth.values()))
    assert t.scale == 1.0
    t = next(iter(corpus.build("sd2", "diffusers-peft", rank=8, max_modules=1).truth.values()))
    assert t.scale == 0.5


# ---------------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes(tmp_path):
    def make(seed, name, **kw):
        p = tmp_path / name
        corpus.write(p, corpus.build("sdxl", "kohya", adapter="loha", targets="all", seed=seed, max_modules=40, **kw))
        return _sha(p)

    a, b, c = make(7, "a"), make(7, "b"), make(8, "c")
    assert a == b and a != c
    # the first modules do not depend on how many follow
    small = corpus.build("sd1", "kohya", seed=3, max_modules=5)
    big = corpus.build("sd1", "kohya", seed=3)
    for k, v in small.tensors.items():
        assert np.array_equal(v, big.tensors[k])


# ---------------------------------------------------------------------------------------------------------
# planted spectra against dense float64 reconstructions of the written files


def _load(path, dtypes):
    if any(d not in ("F64", "F32", "F16", "I64") for d in dtypes.values()):
        torch = pytest.importorskip("torch")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k).to(torch.float64).numpy() for k in f.keys()}
    return {k: v.astype(np.float64) for k, v in safetensors_numpy.load_file(str(path)).items()}


def _expected_scale(synth, t, T):
    """The scale read back from the file and its sidecars, independently of Truth.scale."""
    if t.kind in ("ia3", "oft", "boft", "full", "norm", "textual-inversion"):
        return 1.0
    if t.kind == "lokr" and "lokr_w1" in t.parts and "lokr_w2" in t.parts:
        return 1.0
    if "alpha" in t.parts:
        return float(T[t.parts["alpha"]]) / t.rank
    if synth.fmt == "diffusers-peft":
        cfg = json.loads(synth.metadata["lora_adapter_metadata"])
        comp = {
            "unet": "unet",
            "transformer": "transformer",
            "te": "text_encoder",
            "te1": "text_encoder",
            "te2": "text_encoder_2",
        }[t.component]
        return cfg[f"{comp}.lora_alpha"] / cfg[f"{comp}.r"]
    if synth.fmt == "peft":
        cfg = synth.adapter_config
        return cfg.get("lora_alpha", cfg.get("alpha")) / cfg["r"]
    return 1.0


def _tucker(core, a, b):
    """sum_{i,j} core[i, j, h, w] a[i, o] b[j, c] -> [o, c*h*w]."""
    return np.einsum("ijhw,io,jc->ochw", core, a, b).reshape(a.shape[1], -1)


def _dense(t, T):
    g = lambda role: T[t.parts[role]]  # noqa: E731
    out = t.out_features
    if t.kind in ("lora", "locon", "dora", "lora-tucker"):
        up, down = g("lora_up"), g("lora_down")
        r = down.shape[0]
        if "lora_mid" in t.parts:
            return _tucker(g("lora_mid"), up.reshape(out, r).T, down.reshape(r, -1))
        return up.reshape(out, r) @ down.reshape(r, -1)
    if t.kind == "loha":
        factors = []
        for i in (1, 2):
            if f"hada_t{i}" in t.parts:
                factors.append(_tucker(g(f"hada_t{i}"), g(f"hada_w{i}_a"), g(f"hada_w{i}_b")))
            else:
                factors.append(g(f"hada_w{i}_a") @ g(f"hada_w{i}_b"))
        return factors[0] * factors[1]
    if t.kind == "lokr":
        w1 = g("lokr_w1") if "lokr_w1" in t.parts else g("lokr_w1_a") @ g("lokr_w1_b")
        w2 = g("lokr_w2") if "lokr_w2" in t.parts else g("lokr_w2_a") @ g("lokr_w2_b")
        dw = np.kron(w1, w2.reshape(w2.shape[0], -1))
        assert dw.shape == (out, t.in_features * (np.prod(t.kernel) if t.kernel else 1))
        return dw
    if t.kind == "full":
        return g("diff").reshape(out, -1)
    if t.kind == "glora":
        r = t.rank
        return g("b1").reshape(out, r) @ g("b2").reshape(r, -1)
    if t.kind == "textual-inversion":
        return g("embedding")
    raise AssertionError(t.kind)


def _svd(m):
    return np.linalg.svd(m, compute_uv=False)


DENSE_LIMIT = 3_000_000  # elements: above this a layer is checked through its factors


def _factor_svals(t, T, scale):
    """Exact singular values of large layers without the dense SVD: for dW = A @ B with inner size r,
    sigma^2 are the eigenvalues of (A^T A)(B B^T); LoKr through the dense SVDs of its two (small) factors."""
    g = lambda role: T[t.parts[role]]  # noqa: E731
    out = t.out_features
    if t.kind == "lokr":
        w1 = g("lokr_w1") if "lokr_w1" in t.parts else g("lokr_w1_a") @ g("lokr_w1_b")
        w2 = g("lokr_w2") if "lokr_w2" in t.parts else g("lokr_w2_a") @ g("lokr_w2_b")
        return np.sort(np.abs(scale) * np.outer(_svd(w1), _svd(w2.reshape(w2.shape[0], -1))).ravel())[::-1]
    if t.kind in ("lora", "locon", "dora", "lora-tucker", "glora"):
        if t.kind == "glora":
            a, b = g("b1").reshape(out, t.rank), g("b2").reshape(t.rank, -1)
        else:
            r = g("lora_down").shape[0]
            a = g("lora_up").reshape(out, r)
            b = g("lora_down").reshape(r, -1)
            if "lora_mid" in t.parts:
                b = np.einsum("ijhw,jc->ichw", g("lora_mid"), b).reshape(r, -1)
        ev = np.linalg.eigvals((a.T @ a) @ (b @ b.T)).real
        return np.sort(np.abs(scale) * np.sqrt(np.clip(ev, 0, None)))[::-1]
    return None


def _check_sv(ref, truth, rtol):
    truth = np.asarray(truth)
    assert truth.size > 0 and np.all(np.diff(truth) <= 0)
    np.testing.assert_allclose(ref[: truth.size], truth, rtol=rtol, atol=0)
    assert np.all(ref[truth.size :] <= 1e-6 * ref[0])


def _oft_relative(t, T, constraint):
    blocks = T[t.parts["oft_blocks"]]
    q = blocks - np.swapaxes(blocks, -1, -2)
    norm = np.sqrt(np.sum(q * q))
    if constraint > 0 and norm + 1e-8 > constraint:
        q = q * (constraint / (norm + 1e-8))
    eye = np.eye(q.shape[-1])
    return np.linalg.solve((eye - q).swapaxes(-1, -2), (eye + q).swapaxes(-1, -2)).swapaxes(-1, -2)  # (I+Q)(I-Q)^-1


def _boft_matrix(rot):
    """Explicit butterfly permutations P_i and S_i = P_i^T blockdiag(R_i) P_i, product over stages."""
    m, num, b, _ = rot.shape
    out = num * b
    total = np.eye(out)
    for i in range(m):
        k = 2**i * (b // 2)
        dest = np.empty(out, dtype=np.intp)  # P moves row o to position dest[o]
        for o in range(out):
            c, rem = divmod(o, 2 * k)
            g, kap = divmod(rem, k)
            dest[o] = c * 2 * k + kap * 2 + g
        moved = np.empty_like(total)
        moved[dest] = total  # P @ total
        rotated = np.einsum("dij,djx->dix", rot[i], moved.reshape(num, b, out)).reshape(out, out)
        total = rotated[dest]  # P^T @ rotated
    return total


SPECTRUM_CASES = [
    # family, fmt, adapter, targets, dtype, max_modules, extra kwargs
    ("sd1", "kohya", "lora", "all", "F64", 30, {}),  # 1x1 proj convs, linears, 3x3 resnet convs
    ("sd1", "kohya", "locon", "all", "F32", 30, {"alpha": 3.0}),
    ("sd1", "kohya", "lora-tucker", "all", "F64", 30, {"rank": 3}),
    ("sdxl", "kohya", "loha", "all", "F64", 20, {}),
    ("sd1", "comfy-native", "loha-tucker", "all", "F64", 4, {}),
    ("flux1", "kohya", "lokr", "blocks", "F64", 8, {}),
    ("flux1", "kohya", "lokr", "te-only", "F64", 6, {"factor": 16}),
    ("sd1", "kohya", "lokr", "all", "F64", 30, {"factor": 8, "decompose_both": True}),
    ("sd3", "simpletuner-lycoris", "lokr-full", "blocks", "F64", 3, {}),
    ("flux1", "diffusers-peft", "dora", "attn", "F32", 6, {"alpha": 2.0}),
    ("sd1", "diffusers-peft", "dora", "attn", "F32", 6, {"alpha": 2.0}),
    ("sd2", "peft", "lora", "attn", "F32", 6, {"alpha": 8.0, "rank": 16}),
    ("sd1", "comfy-native", "glora", "all", "F64", 6, {}),
    ("sd1", "comfy-native", "full", "all", "F64", 6, {}),
    ("sdxl", "textual-inversion", "lora", "attn", "F64", None, {"rank": 6}),
    ("flux1", "xlabs", "lora", "attn", "F32", 4, {}),
    ("flux1", "bfl-control", "lora", "attn", "F32", 4, {}),
    ("flux1", "ai-toolkit", "lora", "all-linear", "F32", 2, {}),
    ("sd1", "cloneofsimo", "lora", "blocks", "F32", 10, {}),
    ("sdxl", "diffusers-legacy", "lora", "attn", "F32", 10, {}),
    ("sd3", "onetrainer", "lora", "blocks", "F32", 3, {}),
    ("sd1", "kohya", "lora", "te-only", "F32", 2, {"rank": 800}),  # rank > dims: k = min(out, in)
    ("sd1", "kohya", "lora", "attn", "F64", 4, {"spectrum": lambda r: np.arange(r, 0, -1) / r}),
]


@pytest.mark.parametrize("case", SPECTRUM_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[4]}")
def test_planted_spectra(tmp_path, case):
    family, fmt, adapter, targets, dtype, max_modules, kw = case
    kw = dict(kw)
    synth = corpus.build(family, fmt, adapter=adapter, targets=targets, dtype=dtype, max_modules=max_modules, **kw)
    path = tmp_path / "f.safetensors"
    corpus.write(path, synth)
    T = _load(path, synth.dtypes)
    assert set(T) == set(synth.tensors)
    rtol = 1e-5
    checked = dense_checked = 0
    for stem, t in synth.truth.items():
        for name in t.parts.values():
            assert name.startswith(stem), (stem, name)
        if t.singular_values is None:
            continue
        scale = _expected_scale(synth, t, T)
        assert t.scale == pytest.approx(scale, rel=1e-12)
        fan_in = t.in_features * (t.kernel[0] * t.kernel[1] if t.kernel else 1)
        if t.out_features * fan_in <= DENSE_LIMIT:
            dense = scale * _dense(t, T)
            assert dense.shape[0] == (t.out_features if t.kind != "textual-inversion" else t.rank)
            _check_sv(_svd(dense), t.singular_values, rtol)
            dense_checked += 1
        else:
            ref = _factor_svals(t, T, scale)
            if ref is None:
                continue
            _check_sv(ref, t.singular_values, rtol)
        if "spectrum" in kw:
            np.testing.assert_allclose(t.singular_values, scale * kw["spectrum"](t.rank), rtol=1e-12)
        if t.kind == "glora" and t.in_features**2 <= DENSE_LIMIT:
            r = t.rank
            a = T[t.parts["a1"]].reshape(-1, r) @ T[t.parts["a2"]].reshape(r, -1)
            _check_sv(_svd(scale * a), t.relative_singular_values, rtol)
        checked += 1
    assert checked > 0
    small = [
        t
        for t in synth.truth.values()
        if t.singular_values is not None
        and t.out_features * t.in_features * (np.prod(t.kernel) if t.kernel else 1) <= DENSE_LIMIT
    ]
    assert dense_checked == len(small)
    if targets == "all" and family == "sd1" and fmt == "kohya":
        assert any(t.kernel == (3, 3) for t in synth.truth.values())
        assert any(t.kernel == (1, 1) for t in synth.truth.values())


@pytest.mark.parametrize("adapter,constraint", [("oft", None), ("oft", 1e-4), ("boft", None), ("boft", 1e-5)])
def test_planted_rotations(tmp_path, adapter, constraint):
    synth = corpus.build(
        "sd1", "kohya", adapter=adapter, targets="all", dtype="F64", max_modules=27, rank=8, alpha=constraint
    )
    path = tmp_path / "o.safetensors"
    corpus.write(path, synth)
    T = _load(path, synth.dtypes)
    limited = 0
    checked = 0
    for t in synth.truth.values():
        out = t.out_features
        alpha = float(T[t.parts["alpha"]])
        if t.relative_singular_values is None:
            assert adapter == "boft" and out > 1024
            continue
        checked += 1
        assert alpha == (constraint or 0.0)
        blocks = T[t.parts["oft_blocks"]]
        if adapter == "oft":
            b = t.extra["block_size"]
            assert blocks.shape == (out // b, b, b)
            rot = np.swapaxes(_oft_relative(t, T, alpha * out), -1, -2)  # loaders apply R_k^T to row group k
            np.testing.assert_allclose(
                rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(b), rot.shape), atol=1e-10
            )
            # singular values of a block-diagonal matrix: the union of the blocks' singular values
            ref = np.sort(_svd(rot - np.eye(b)).ravel())[::-1]
        else:
            assert blocks.ndim == 4 and blocks.shape[1] * blocks.shape[2] == out
            full = _boft_matrix(_oft_relative(t, T, alpha * out))
            np.testing.assert_allclose(full @ full.T, np.eye(out), atol=1e-10)  # orthogonal
            ref = _svd(full - np.eye(out))
        _check_sv(ref, t.relative_singular_values, 1e-6)
        q = blocks - np.swapaxes(blocks, -1, -2)
        limited += constraint is not None and np.linalg.norm(q) > alpha * out
    assert checked > 20
    if constraint is not None:
        assert limited > 0  # the constraint really cut some layers


@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_planted_ia3(tmp_path, fmt):
    synth = corpus.build(
        "sd1", fmt, adapter="ia3", targets="all" if fmt == "kohya" else "attn", dtype="F64", max_modules=30
    )
    path = tmp_path / "i.safetensors"
    corpus.write(path, synth)
    T = _load(path, synth.dtypes)
    for t in synth.truth.values():
        v = T[t.parts["weight"]].reshape(-1)
        assert v.size == t.out_features
        if fmt == "peft":
            v = v - 1.0
            assert "on_input" not in t.parts
        else:
            assert synth.dtypes[t.parts["on_input"]] == "I64" and T[t.parts["on_input"]] == 0
        np.testing.assert_allclose(np.sort(np.abs(v))[::-1], t.relative_singular_values, rtol=1e-12)
        assert t.singular_values is None and t.delta_basis == "none"


@pytest.mark.parametrize("dtype", corpus.FLOAT_DTYPES)
def test_build_roundtrip_every_dtype(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    synth = corpus.build("flux1", "kohya", adapter="loha", dtype=dtype, max_modules=3, alpha=1.5)
    path = tmp_path / "d.safetensors"
    corpus.write(path, synth)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == synth.metadata
        for k in f.keys():
            got = f.get_tensor(k)
            ours = synth.tensors[k]
            assert tuple(got.shape) == ours.shape
            if dtype in ("BF16",):
                assert np.array_equal(got.view(torch.int16).numpy().view(np.uint16), ours)
            elif dtype.startswith("F8"):
                assert np.array_equal(got.view(torch.uint8).numpy(), ours)
            else:
                assert np.array_equal(got.numpy(), ours)
            assert np.array_equal(got.to(torch.float64).numpy(), synth.array(k))
    # stored values are the planted float64 values rounded from float32
    t = next(iter(synth.truth.values()))
    assert t.alpha == float(corpus.round_to(1.5, dtype))


def test_bfl_control_extras():
    synth = corpus.build("flux1", "bfl-control", targets="all-linear", max_modules=12)
    assert next(iter(synth.truth)) == "img_in"
    assert synth.truth["img_in"].in_features == 128
    scales = [t for t in synth.truth.values() if "set_weight" in t.parts]
    assert scales and all(t.kind == "norm" for t in scales)
    assert all("lora_up_bias" in t.parts for t in synth.truth.values() if "lora_up" in t.parts)
