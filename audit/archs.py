"""Adaptable modules of the supported base architectures: names and weight shapes, generated from each
architecture's configuration (channel multipliers, transformer depth per level, widths, layer counts).

Used by the synthetic corpus (``audit.corpus``), the tests and the benchmarks. numpy-free and torch-free.

Families, components and namings
--------------------------------
``family``     ``sd1`` (SD 1.x), ``sd2`` (SD 2.x), ``sdxl`` (SDXL base), ``sd3`` (SD3 medium), ``flux1``
               (FLUX.1 dev/schnell shapes; ``guidance_in`` is the dev-family embedder).
``component``  the model part, named by its role (not by a file prefix):
               ``unet`` / ``transformer`` (the denoiser), ``te`` (SD1/SD2 single CLIP text encoder),
               ``te1`` (CLIP-L), ``te2`` (OpenCLIP bigG, SDXL and SD3), ``te3`` (T5-XXL, SD3 and FLUX).
``naming``     ``diffusers`` (diffusers module paths), ``sgm`` (the Stability SGM/LDM UNet paths that
               sd-scripts uses for SDXL and ComfyUI uses for every SD UNet: ``input_blocks.4.1...``),
               ``bfl`` (the original DiT paths: BFL FLUX ``double_blocks.0.img_attn.qkv``, SAI SD3
               ``joint_blocks.0.x_block.attn.qkv``), ``hf-clip`` (transformers CLIP:
               ``text_model.encoder.layers.0.self_attn.q_proj``), ``hf-t5`` (transformers T5 encoder:
               ``encoder.block.0.layer.0.SelfAttention.q``).

Every :class:`Module` carries a ``group`` used to select LoRA targets:
``attn`` attention projections, ``ff`` feed-forward / MLP, ``proj`` SD ``proj_in``/``proj_out``,
``mod`` DiT adaLN modulation inside the blocks, ``resnet`` UNet ResNet convs and ``time_emb_proj``,
``sampler`` UNet down/upsampler convs, ``embed`` input/output/embedding layers outside the blocks
(``conv_in``, ``time_embedding``, ``img_in``, ``final_layer`` ...), ``norm`` normalisation layers
(only listed with ``include_norms=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux1")
KINDS = ("linear", "conv", "norm")
GROUPS = ("attn", "ff", "proj", "mod", "resnet", "sampler", "embed", "norm")

# Target sets (see select()).
TARGETS = ("attn", "blocks", "all", "all-linear", "everything", "te-only")

_COMPONENTS = {
    "sd1": ("unet", "te"),
    "sd2": ("unet", "te"),
    "sdxl": ("unet", "te1", "te2"),
    "sd3": ("transformer", "te1", "te2", "te3"),
    "flux1": ("transformer", "te1", "te3"),
}

# Text encoder models per (family, component): (kind, width, layers, mlp width[, attention inner width]).
_TE_MODELS = {
    # CLIP ViT-L/14 text tower (SD1, SDXL te1, SD3 te1, FLUX te1)
    "clip-l": ("clip", 768, 12, 3072),
    # OpenCLIP ViT-H/14 as diffusers / sd-scripts convert it for SD2: 24 layers minus the unused last one
    "clip-h": ("clip", 1024, 23, 4096),
    # OpenCLIP ViT-bigG/14 text tower (SDXL te2, SD3 te2)
    "clip-g": ("clip", 1280, 32, 5120),
    # T5 v1.1 XXL encoder: d_model 4096, 64 heads x 64, gated-GELU d_ff 10240
    "t5-xxl": ("t5", 4096, 24, 10240, 4096),
}
_TE_OF = {
    ("sd1", "te"): "clip-l",
    ("sd2", "te"): "clip-h",
    ("sdxl", "te1"): "clip-l",
    ("sdxl", "te2"): "clip-g",
    ("sd3", "te1"): "clip-l",
    ("sd3", "te2"): "clip-g",
    ("sd3", "te3"): "t5-xxl",
    ("flux1", "te1"): "clip-l",
    ("flux1", "te3"): "t5-xxl",
}


@dataclass(frozen=True)
class Module:
    """One adaptable layer. Shapes follow PyTorch: Linear ``[out, in]``, Conv2d ``[out, in, kh, kw]``."""

    path: str
    out_features: int
    in_features: int
    kernel: tuple[int, int] | None = None  # None for Linear (and norms)
    kind: str = "linear"  # "linear" | "conv" | "norm"
    group: str = "attn"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "norm":
            return (self.out_features,)
        if self.kernel is None:
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, *self.kernel)

    @property
    def fan_in(self) -> int:
        """Columns of the weight seen as a matrix: in_features * kh * kw."""
        if self.kernel is None:
            return self.in_features
        return self.in_features * self.kernel[0] * self.kernel[1]


def _lin(path: str, out: int, inp: int, group: str) -> Module:
    return Module(path, out, inp, None, "linear", group)


def _conv(path: str, out: int, inp: int, k: int, group: str) -> Module:
    return Module(path, out, inp, (k, k), "conv", group)


def _norm(path: str, channels: int) -> Module:
    return Module(path, channels, channels, None, "norm", "norm")


# ---------------------------------------------------------------------------------------------------------
# families and components


def components(family: str) -> tuple[str, ...]:
    """Components of a family, denoiser first."""
    _check_family(family)
    return _COMPONENTS[family]


def denoiser(family: str) -> str:
    return components(family)[0]


def text_encoder_components(family: str) -> tuple[str, ...]:
    return components(family)[1:]


def te_model(family: str, component: str) -> str:
    """``clip-l`` | ``clip-h`` | ``clip-g`` | ``t5-xxl`` for a text-encoder component."""
    try:
        return _TE_OF[(family, component)]
    except KeyError:
        raise ValueError(f"{family!r} has no text encoder component {component!r}") from None


def namings(family: str, component: str) -> tuple[str, ...]:
    """The namings :func:`modules` accepts for a component."""
    if component not in components(family):
        raise ValueError(f"{family!r} has no component {component!r}; it has {components(family)}")
    if component in ("unet",):
        return ("diffusers", "sgm")
    if component == "transformer":
        return ("diffusers", "bfl")
    return ("hf-t5",) if te_model(family, component) == "t5-xxl" else ("hf-clip",)


def native_naming(family: str) -> str:
    """The original (non-diffusers) naming of a family's denoiser: ``sgm`` for UNets, ``bfl`` for DiTs."""
    return "sgm" if denoiser(family) == "unet" else "bfl"


def _check_family(family: str) -> None:
    if family not in _COMPONENTS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def modules(family: str, component: str, naming: str, *, include_norms: bool = False) -> list[Module]:
    """The ordered adaptable modules of one component under one naming.

    Linear and Conv2d layers are always listed; normalisation layers (LayerNorm, GroupNorm, T5 RMS norm)
    only with ``include_norms=True`` (they are targets of LyCORIS norm tuning only). The order follows the
    model's module registration order (``named_modules()``) for the diffusers and transformers trees.
    """
    allowed = namings(family, component)
    if naming not in allowed:
        raise ValueError(f"naming {naming!r} does not apply to {family}/{component}; expected one of {allowed}")
    if component == "unet":
        cfg = _UNETS[family]
        mods = _unet_diffusers(cfg) if naming == "diffusers" else _unet_sgm(cfg)
    elif component == "transformer":
        if family == "flux1":
            mods = _flux_diffusers() if naming == "diffusers" else _flux_bfl()
        else:
            mods = _sd3_diffusers() if naming == "diffusers" else _sd3_bfl()
    else:
        spec = _TE_MODELS[te_model(family, component)]
        mods = _clip(*spec[1:]) if spec[0] == "clip" else _t5(*spec[1:])
    if not include_norms:
        mods = [m for m in mods if m.kind != "norm"]
    return mods


def select(mods: list[Module], targets: str) -> list[Module]:
    """Filter modules by a target set (order kept; norms are never selected).

    ``attn``        attention projections only.
    ``blocks``      everything inside the transformer blocks: attention, feed-forward, SD ``proj_in``/
                    ``proj_out`` (1x1 convs in SD1), DiT modulation. This is sd-scripts' default
                    ("attention-only") LoRA: 192 UNet modules for SD1, 722 for SDXL.
    ``all``         ``blocks`` plus UNet ResNet layers and down/upsamplers (the LoCon / LyCORIS set,
                    3x3 convs included); for DiTs and text encoders the same as ``blocks``.
    ``all-linear``  every Linear layer, embeddings and final layers included (PEFT's "all-linear").
    ``everything``  every Linear and Conv2d layer.
    ``te-only``     like ``blocks`` (the caller drops the denoiser).
    """
    if targets not in TARGETS:
        raise ValueError(f"unknown targets {targets!r}; expected one of {TARGETS}")
    mods = [m for m in mods if m.kind != "norm"]
    if targets == "attn":
        return [m for m in mods if m.group == "attn"]
    if targets in ("blocks", "te-only"):
        return [m for m in mods if m.group in ("attn", "ff", "proj", "mod")]
    if targets == "all":
        return [m for m in mods if m.group != "embed"]
    if targets == "all-linear":
        return [m for m in mods if m.kind == "linear"]
    return list(mods)


# ---------------------------------------------------------------------------------------------------------
# UNets (SD1, SD2, SDXL)


@dataclass(frozen=True)
class _UNetConfig:
    channels: tuple[int, ...]  # block_out_channels
    attention: tuple[bool, ...]  # cross-attention at this level (down order)
    depth: tuple[int, ...]  # transformer blocks per attention at this level
    mid_depth: int
    context_dim: int
    linear_projection: bool  # proj_in/proj_out Linear (SD2, SDXL) or 1x1 Conv (SD1)
    adm_in: int | None = None  # SDXL vector conditioning width (pooled bigG 1280 + 6 x 256 size embeddings)
    layers_per_block: int = 2
    in_channels: int = 4
    out_channels: int = 4


_UNETS = {
    "sd1": _UNetConfig((320, 640, 1280, 1280), (True, True, True, False), (1, 1, 1, 0), 1, 768, False),
    "sd2": _UNetConfig((320, 640, 1280, 1280), (True, True, True, False), (1, 1, 1, 0), 1, 1024, True),
    "sdxl": _UNetConfig((320, 640, 1280), (False, True, True), (0, 2, 10), 10, 2048, True, adm_in=2816),
}

_RESNET_DIFFUSERS = ("norm1", "conv1", "time_emb_proj", "norm2", "conv2", "conv_shortcut")
_RESNET_SGM = ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3", "skip_connection")
_TIME_EMBED_DIFFUSERS = ("time_embedding.linear_1", "time_embedding.linear_2",
                         "add_embedding.linear_1", "add_embedding.linear_2")
_TIME_EMBED_SGM = ("time_embed.0", "time_embed.2", "label_emb.0.0", "label_emb.0.2")


def _time_embeddings(cfg: _UNetConfig, temb: int, names: tuple[str, ...]) -> list[Module]:
    """The timestep MLP and, with ``adm_in`` (SDXL), the vector-conditioning MLP, in registration order."""
    t1, t2, a1, a2 = names
    mods = [_lin(t1, temb, cfg.channels[0], "embed"), _lin(t2, temb, temb, "embed")]
    if cfg.adm_in:
        mods.append(_lin(a1, temb, cfg.adm_in, "embed"))
        mods.append(_lin(a2, temb, temb, "embed"))
    return mods


def _resnet(prefix: str, cin: int, cout: int, temb: int, names: tuple[str, ...]) -> list[Module]:
    n1, c1, te, n2, c2, sc = names
    mods = [
        _norm(prefix + n1, cin),
        _conv(prefix + c1, cout, cin, 3, "resnet"),
        _lin(prefix + te, cout, temb, "resnet"),
        _norm(prefix + n2, cout),
        _conv(prefix + c2, cout, cout, 3, "resnet"),
    ]
    if cin != cout:
        mods.append(_conv(prefix + sc, cout, cin, 1, "resnet"))
    return mods


def _spatial_transformer(prefix: str, dim: int, depth: int, cfg: _UNetConfig) -> list[Module]:
    ctx = cfg.context_dim
    inner = 4 * dim  # GEGLU feed-forward: proj out = 2 * inner

    def proj(name: str) -> Module:
        if cfg.linear_projection:
            return _lin(prefix + name, dim, dim, "proj")
        return _conv(prefix + name, dim, dim, 1, "proj")

    mods = [_norm(prefix + "norm", dim), proj("proj_in")]
    for k in range(depth):
        b = f"{prefix}transformer_blocks.{k}."
        mods.append(_norm(b + "norm1", dim))
        for p in ("to_q", "to_k", "to_v", "to_out.0"):
            mods.append(_lin(f"{b}attn1.{p}", dim, dim, "attn"))
        mods.append(_norm(b + "norm2", dim))
        mods.append(_lin(b + "attn2.to_q", dim, dim, "attn"))
        mods.append(_lin(b + "attn2.to_k", dim, ctx, "attn"))
        mods.append(_lin(b + "attn2.to_v", dim, ctx, "attn"))
        mods.append(_lin(b + "attn2.to_out.0", dim, dim, "attn"))
        mods.append(_norm(b + "norm3", dim))
        mods.append(_lin(b + "ff.net.0.proj", 2 * inner, dim, "ff"))
        mods.append(_lin(b + "ff.net.2", dim, inner, "ff"))
    mods.append(proj("proj_out"))
    return mods


def _unet_diffusers(cfg: _UNetConfig) -> list[Module]:
    ch = cfg.channels
    n = len(ch)
    temb = 4 * ch[0]
    L = cfg.layers_per_block
    mods = [_conv("conv_in", ch[0], cfg.in_channels, 3, "embed")]
    mods += _time_embeddings(cfg, temb, _TIME_EMBED_DIFFUSERS)

    # Down blocks: CrossAttnDownBlock2D registers attentions before resnets.
    out_ch = ch[0]
    for i in range(n):
        in_ch, out_ch = out_ch, ch[i]
        pre = f"down_blocks.{i}."
        att: list[Module] = []
        res: list[Module] = []
        for j in range(L):
            res += _resnet(f"{pre}resnets.{j}.", in_ch if j == 0 else out_ch, out_ch, temb, _RESNET_DIFFUSERS)
            if cfg.attention[i]:
                att += _spatial_transformer(f"{pre}attentions.{j}.", out_ch, cfg.depth[i], cfg)
        mods += att + res
        if i < n - 1:
            mods.append(_conv(pre + "downsamplers.0.conv", out_ch, out_ch, 3, "sampler"))

    # Up blocks (registered before the mid block in UNet2DConditionModel).
    rev = ch[::-1]
    out_ch = rev[0]
    for i in range(n):
        prev, out_ch = out_ch, rev[i]
        inp = rev[min(i + 1, n - 1)]
        level = n - 1 - i
        pre = f"up_blocks.{i}."
        att, res = [], []
        for j in range(L + 1):
            skip = inp if j == L else out_ch
            rin = prev if j == 0 else out_ch
            res += _resnet(f"{pre}resnets.{j}.", rin + skip, out_ch, temb, _RESNET_DIFFUSERS)
            if cfg.attention[level]:
                att += _spatial_transformer(f"{pre}attentions.{j}.", out_ch, cfg.depth[level], cfg)
        mods += att + res
        if i < n - 1:
            mods.append(_conv(pre + "upsamplers.0.conv", out_ch, out_ch, 3, "sampler"))

    c = ch[-1]
    mods += _spatial_transformer("mid_block.attentions.0.", c, cfg.mid_depth, cfg)
    mods += _resnet("mid_block.resnets.0.", c, c, temb, _RESNET_DIFFUSERS)
    mods += _resnet("mid_block.resnets.1.", c, c, temb, _RESNET_DIFFUSERS)
    mods.append(_norm("conv_norm_out", ch[0]))
    mods.append(_conv("conv_out", cfg.out_channels, ch[0], 3, "embed"))
    return mods


def _unet_sgm(cfg: _UNetConfig) -> list[Module]:
    """SGM/LDM ``UNetModel`` paths; channel bookkeeping with the skip-connection stack of the original code."""
    ch = cfg.channels
    n = len(ch)
    temb = 4 * ch[0]
    L = cfg.layers_per_block
    mods = _time_embeddings(cfg, temb, _TIME_EMBED_SGM)
    mods.append(_conv("input_blocks.0.0", ch[0], cfg.in_channels, 3, "embed"))

    skips = [ch[0]]
    cur = ch[0]
    idx = 1
    for i in range(n):
        for _ in range(L):
            mods += _resnet(f"input_blocks.{idx}.0.", cur, ch[i], temb, _RESNET_SGM)
            cur = ch[i]
            if cfg.attention[i]:
                mods += _spatial_transformer(f"input_blocks.{idx}.1.", cur, cfg.depth[i], cfg)
            skips.append(cur)
            idx += 1
        if i < n - 1:
            mods.append(_conv(f"input_blocks.{idx}.0.op", cur, cur, 3, "sampler"))
            skips.append(cur)
            idx += 1

    mods += _resnet("middle_block.0.", cur, cur, temb, _RESNET_SGM)
    mods += _spatial_transformer("middle_block.1.", cur, cfg.mid_depth, cfg)
    mods += _resnet("middle_block.2.", cur, cur, temb, _RESNET_SGM)

    idx = 0
    for i in reversed(range(n)):
        for j in range(L + 1):
            skip = skips.pop()
            mods += _resnet(f"output_blocks.{idx}.0.", cur + skip, ch[i], temb, _RESNET_SGM)
            cur = ch[i]
            sub = 1
            if cfg.attention[i]:
                mods += _spatial_transformer(f"output_blocks.{idx}.1.", cur, cfg.depth[i], cfg)
                sub = 2
            if i > 0 and j == L:
                mods.append(_conv(f"output_blocks.{idx}.{sub}.conv", cur, cur, 3, "sampler"))
            idx += 1
    mods.append(_norm("out.0", ch[0]))
    mods.append(_conv("out.2", cfg.out_channels, ch[0], 3, "embed"))
    return mods


# ---------------------------------------------------------------------------------------------------------
# FLUX.1 (19 double + 38 single blocks, hidden 3072, mlp 12288, T5 4096 context, CLIP-L 768 pooled)

_FLUX_H = 3072
_FLUX_MLP = 12288
_FLUX_DOUBLE = 19
_FLUX_SINGLE = 38
_FLUX_IN = 64  # 16 latent channels x 2x2 patches
_FLUX_CTX = 4096
_FLUX_VEC = 768
_FLUX_T = 256  # sinusoidal timestep / guidance embedding width


def _flux_bfl() -> list[Module]:
    H, M = _FLUX_H, _FLUX_MLP
    mods = [
        _lin("img_in", H, _FLUX_IN, "embed"),
        _lin("time_in.in_layer", H, _FLUX_T, "embed"),
        _lin("time_in.out_layer", H, H, "embed"),
        _lin("vector_in.in_layer", H, _FLUX_VEC, "embed"),
        _lin("vector_in.out_layer", H, H, "embed"),
        _lin("guidance_in.in_layer", H, _FLUX_T, "embed"),
        _lin("guidance_in.out_layer", H, H, "embed"),
        _lin("txt_in", H, _FLUX_CTX, "embed"),
    ]
    for i in range(_FLUX_DOUBLE):
        b = f"double_blocks.{i}."
        for s in ("img", "txt"):
            mods += [
                _lin(f"{b}{s}_mod.lin", 6 * H, H, "mod"),
                _lin(f"{b}{s}_attn.qkv", 3 * H, H, "attn"),
                _lin(f"{b}{s}_attn.proj", H, H, "attn"),
                _lin(f"{b}{s}_mlp.0", M, H, "ff"),
                _lin(f"{b}{s}_mlp.2", H, M, "ff"),
            ]
    for i in range(_FLUX_SINGLE):
        b = f"single_blocks.{i}."
        mods += [
            # linear1 = fused q, k, v and MLP-in (3*3072 + 12288 = 21504); linear2 = attention-out + MLP-out
            _lin(b + "linear1", 3 * H + M, H, "attn"),
            _lin(b + "linear2", H, H + M, "attn"),
            _lin(b + "modulation.lin", 3 * H, H, "mod"),
        ]
    mods += [
        _lin("final_layer.linear", _FLUX_IN, H, "embed"),
        _lin("final_layer.adaLN_modulation.1", 2 * H, H, "embed"),
    ]
    return mods


def _flux_diffusers() -> list[Module]:
    H, M = _FLUX_H, _FLUX_MLP
    mods = [
        _lin("time_text_embed.timestep_embedder.linear_1", H, _FLUX_T, "embed"),
        _lin("time_text_embed.timestep_embedder.linear_2", H, H, "embed"),
        _lin("time_text_embed.guidance_embedder.linear_1", H, _FLUX_T, "embed"),
        _lin("time_text_embed.guidance_embedder.linear_2", H, H, "embed"),
        _lin("time_text_embed.text_embedder.linear_1", H, _FLUX_VEC, "embed"),
        _lin("time_text_embed.text_embedder.linear_2", H, H, "embed"),
        _lin("context_embedder", H, _FLUX_CTX, "embed"),
        _lin("x_embedder", H, _FLUX_IN, "embed"),
    ]
    for i in range(_FLUX_DOUBLE):
        b = f"transformer_blocks.{i}."
        mods += [
            _lin(b + "norm1.linear", 6 * H, H, "mod"),
            _lin(b + "norm1_context.linear", 6 * H, H, "mod"),
        ]
        for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            mods.append(_lin(f"{b}attn.{p}", H, H, "attn"))
        for ff in ("ff", "ff_context"):
            mods += [_lin(f"{b}{ff}.net.0.proj", M, H, "ff"), _lin(f"{b}{ff}.net.2", H, M, "ff")]
    for i in range(_FLUX_SINGLE):
        b = f"single_transformer_blocks.{i}."
        mods += [
            _lin(b + "norm.linear", 3 * H, H, "mod"),
            _lin(b + "proj_mlp", M, H, "ff"),
            _lin(b + "proj_out", H, H + M, "attn"),
            _lin(b + "attn.to_q", H, H, "attn"),
            _lin(b + "attn.to_k", H, H, "attn"),
            _lin(b + "attn.to_v", H, H, "attn"),
        ]
    mods += [_lin("norm_out.linear", 2 * H, H, "embed"), _lin("proj_out", _FLUX_IN, H, "embed")]
    return mods


# ---------------------------------------------------------------------------------------------------------
# SD3 medium (MMDiT: 24 joint blocks, hidden 64*24 = 1536, mlp 4x; the last block is context-pre-only)

_SD3_D = 1536
_SD3_DEPTH = 24
_SD3_MLP = 4 * _SD3_D
_SD3_LATENT = 16
_SD3_PATCH = 2
_SD3_CTX = 4096
_SD3_POOLED = 2048  # CLIP-L 768 + CLIP-G 1280 pooled
_SD3_T = 256
_SD3_EMBED_BFL = ("x_embedder.proj", "t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.mlp.0", "y_embedder.mlp.2",
                  "context_embedder")
_SD3_EMBED_DIFFUSERS = ("pos_embed.proj", "time_text_embed.timestep_embedder.linear_1",
                        "time_text_embed.timestep_embedder.linear_2", "time_text_embed.text_embedder.linear_1",
                        "time_text_embed.text_embedder.linear_2", "context_embedder")


def _sd3_embedders(names: tuple[str, ...]) -> list[Module]:
    """Patch embedding, timestep MLP, pooled-text MLP and context projection, in registration order."""
    patch, t1, t2, y1, y2, ctx = names
    D = _SD3_D
    return [
        Module(patch, D, _SD3_LATENT, (_SD3_PATCH, _SD3_PATCH), "conv", "embed"),
        _lin(t1, D, _SD3_T, "embed"),
        _lin(t2, D, D, "embed"),
        _lin(y1, D, _SD3_POOLED, "embed"),
        _lin(y2, D, D, "embed"),
        _lin(ctx, D, _SD3_CTX, "embed"),
    ]


def _sd3_bfl() -> list[Module]:
    D, M = _SD3_D, _SD3_MLP
    out = _SD3_PATCH * _SD3_PATCH * _SD3_LATENT
    mods = _sd3_embedders(_SD3_EMBED_BFL)
    for i in range(_SD3_DEPTH):
        last = i == _SD3_DEPTH - 1
        for blk in ("context_block", "x_block"):
            b = f"joint_blocks.{i}.{blk}."
            pre_only = last and blk == "context_block"
            mods.append(_lin(b + "attn.qkv", 3 * D, D, "attn"))
            if not pre_only:
                mods += [
                    _lin(b + "attn.proj", D, D, "attn"),
                    _lin(b + "mlp.fc1", M, D, "ff"),
                    _lin(b + "mlp.fc2", D, M, "ff"),
                ]
            mods.append(_lin(b + "adaLN_modulation.1", (2 if pre_only else 6) * D, D, "mod"))
    mods += [_lin("final_layer.linear", out, D, "embed"), _lin("final_layer.adaLN_modulation.1", 2 * D, D, "embed")]
    return mods


def _sd3_diffusers() -> list[Module]:
    D, M = _SD3_D, _SD3_MLP
    out = _SD3_PATCH * _SD3_PATCH * _SD3_LATENT
    mods = _sd3_embedders(_SD3_EMBED_DIFFUSERS)
    for i in range(_SD3_DEPTH):
        last = i == _SD3_DEPTH - 1
        b = f"transformer_blocks.{i}."
        mods += [
            _lin(b + "norm1.linear", 6 * D, D, "mod"),
            _lin(b + "norm1_context.linear", (2 if last else 6) * D, D, "mod"),
        ]
        projs = ["to_q", "to_k", "to_v", "add_k_proj", "add_v_proj", "add_q_proj", "to_out.0"]
        if not last:
            projs.append("to_add_out")
        mods += [_lin(f"{b}attn.{p}", D, D, "attn") for p in projs]
        ffs = ("ff",) if last else ("ff", "ff_context")
        for ff in ffs:
            mods += [_lin(f"{b}{ff}.net.0.proj", M, D, "ff"), _lin(f"{b}{ff}.net.2", D, M, "ff")]
    mods += [_lin("norm_out.linear", 2 * D, D, "embed"), _lin("proj_out", out, D, "embed")]
    return mods


# ---------------------------------------------------------------------------------------------------------
# text encoders


def _clip(width: int, layers: int, mlp: int) -> list[Module]:
    mods: list[Module] = []
    for i in range(layers):
        b = f"text_model.encoder.layers.{i}."
        # CLIPAttention registers k_proj, v_proj, q_proj, out_proj in this order.
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            mods.append(_lin(f"{b}self_attn.{p}", width, width, "attn"))
        mods.append(_norm(b + "layer_norm1", width))
        mods.append(_lin(b + "mlp.fc1", mlp, width, "ff"))
        mods.append(_lin(b + "mlp.fc2", width, mlp, "ff"))
        mods.append(_norm(b + "layer_norm2", width))
    mods.append(_norm("text_model.final_layer_norm", width))
    return mods


def _t5(width: int, layers: int, mlp: int, inner: int) -> list[Module]:
    mods: list[Module] = []
    for i in range(layers):
        b = f"encoder.block.{i}.layer."
        for p in ("q", "k", "v"):
            mods.append(_lin(f"{b}0.SelfAttention.{p}", inner, width, "attn"))
        mods.append(_lin(f"{b}0.SelfAttention.o", width, inner, "attn"))
        mods.append(_norm(f"{b}0.layer_norm", width))
        mods.append(_lin(f"{b}1.DenseReluDense.wi_0", mlp, width, "ff"))
        mods.append(_lin(f"{b}1.DenseReluDense.wi_1", mlp, width, "ff"))
        mods.append(_lin(f"{b}1.DenseReluDense.wo", width, mlp, "ff"))
        mods.append(_norm(f"{b}1.layer_norm", width))
    mods.append(_norm("encoder.final_layer_norm", width))
    return mods
