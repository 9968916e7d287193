"""Key formats: recognise how a file spells its tensor names and group the tensors into adapted layers.

Works on names, shapes and dtypes only; no tensor data is read. Every key is split into
*(component prefix, module path, adapter suffix)*; the suffix spelling is mapped onto a canonical role of
:data:`audit.adapters.base.ROLES`, and tensors that share component and module form one
:class:`~audit.adapters.base.LayerGroup`. Every tensor ends up either in a group or in
``FormatResult.unrecognised``: ``recognised + len(unrecognised) == total`` always holds.

Key-format ids (DESIGN.md): ``kohya``, ``diffusers-legacy``, ``diffusers-peft``, ``peft``, ``onetrainer``,
``ai-toolkit``, ``xlabs``, ``bfl-control``, ``comfy-native``, ``simpletuner-lycoris``, ``cloneofsimo``,
``textual-inversion``, ``unknown``.

Module paths are kept as written after the prefix (kohya names stay flattened), with three normalisations
that name the layer the factors act on: the attention-processor spelling
``….attn1.processor.to_q_lora.down.weight`` becomes module ``….attn1.to_q`` (``to_out_lora`` →
``to_out.0``); XLabs double-block processors become BFL module names (``qkv_lora1`` → ``img_attn.qkv``,
``proj_lora2`` → ``txt_attn.proj``: lora1 is the image stream, lora2 the text stream); the Z-Image kohya
double underscore (``lora_unet__layers_0…``) is dropped.

Metadata strings are attacker-controlled: JSON inside them is parsed only with a size and depth cap, and
never used as a regular expression, a format string or a path.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from audit import findings
from audit.adapters.base import ROLES, LayerGroup, ScaleContext
from audit.container import Limits, parse_nested_json
from audit.errors import AuditError
from audit.findings import Finding

FORMAT_IDS = (
    "kohya",
    "diffusers-legacy",
    "diffusers-peft",
    "peft",
    "onetrainer",
    "ai-toolkit",
    "xlabs",
    "bfl-control",
    "comfy-native",
    "simpletuner-lycoris",
    "cloneofsimo",
    "textual-inversion",
    "unknown",
)

COMPONENTS = (
    "unet", "te", "te1", "te2", "te3", "transformer", "prior_unet", "prior_te", "embedding", "vision", "unknown",
)


@dataclass(frozen=True)
class TensorMeta:
    dtype: str
    shape: tuple[int, ...]


@dataclass
class FormatResult:
    format: str  # dominant key-format id (by tensor count among recognised tensors)
    formats: dict[str, int]  # tensors per format id
    groups: list[LayerGroup]  # sorted by key
    unrecognised: list[str]  # every tensor assigned to no group (sorted)
    recognised: int  # tensors assigned to groups
    total: int  # all tensors
    scale: ScaleContext
    domain_hint: str | None = None  # "not-diffusion" | "not-a-lora" | None
    domain_reason: str | None = None
    findings: list[Finding] = field(default_factory=list)
    embeddings: int = 0  # number of textual-inversion embedding groups


# ------------------------------------------------------------------------------------------------------
# suffix vocabulary

# styles: K kohya/LyCORIS spelling, A PEFT/diffusers lora_A/B spelling, L diffusers legacy, X xlabs,
# S BFL-control parameter replacement, I LyCORIS IA3 plain ``weight`` (valid only next to ``on_input``)
_K, _A, _L, _X, _S, _I = "K", "A", "L", "X", "S", "I"

_SUFFIX: dict[str, tuple[str, str]] = {
    "lora_down.weight": ("lora_down", _K),
    "lora_up.weight": ("lora_up", _K),
    "lora_mid.weight": ("lora_mid", _K),
    "alpha": ("alpha", _K),
    "dora_scale": ("dora_scale", _K),
    "on_input": ("on_input", _K),
    "oft_blocks": ("oft_blocks", _K),
    "rescale": ("rescale", _K),
    "diff": ("diff", _K),
    "diff_b": ("diff_b", _K),
    "w_norm": ("w_norm", _K),
    "b_norm": ("b_norm", _K),
    "set_weight": ("set_weight", _K),
    "bias_indices": ("bias_indices", _K),
    "bias_values": ("bias_values", _K),
    "bias_size": ("bias_size", _K),
    "a1.weight": ("a1", _K),
    "a2.weight": ("a2", _K),
    "b1.weight": ("b1", _K),
    "b2.weight": ("b2", _K),
    "bm.weight": ("bm", _K),
    "weight": ("weight", _I),
    "lora_A.weight": ("lora_down", _A),
    "lora_B.weight": ("lora_up", _A),
    "lora_A": ("lora_down", _A),
    "lora_B": ("lora_up", _A),
    "lora_B.bias": ("lora_up_bias", _A),
    "lora_magnitude_vector": ("dora_scale", _A),
    "lora_magnitude_vector.weight": ("dora_scale", _A),
    "ia3_l": ("weight", _A),
    "ia3_l.weight": ("weight", _A),
    "lora.down.weight": ("lora_down", _L),
    "lora.up.weight": ("lora_up", _L),
    "lora_linear_layer.down.weight": ("lora_down", _L),
    "lora_linear_layer.up.weight": ("lora_up", _L),
}
for _r in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
           "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"):
    _SUFFIX[_r] = (_r, _K)
assert all(role in ROLES for role, _ in _SUFFIX.values())

# PEFT keeps the adapter name in some saves: ``lora_A.<name>.weight`` (``default`` most often)
_ADAPTER_NAMED = {"lora_A": "lora_down", "lora_B": "lora_up", "lora_magnitude_vector": "dora_scale"}
_ADAPTER_NAME_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_XLABS_RE = re.compile(r"(qkv|proj)_lora([12]?)")
_XLABS_DOUBLE_RE = re.compile(r"double_blocks\.\d+")
_XLABS_HEAD_RE = re.compile(r"(?:double|single)_blocks\.\d+\.processor")

_KOHYA_RE = re.compile(
    r"(lora_unet_|lora_te[123]?_|lora_prior_unet_|lora_prior_te_|lora_transformer_|lycoris_)([^.]+)\.(.+)",
    re.DOTALL,
)
_KOHYA_COMPONENT = {
    "lora_unet_": ("kohya", None),  # unet, or transformer for DiTs: decided from the file's module names
    "lora_te_": ("kohya", "te"),
    "lora_te1_": ("kohya", "te1"),
    "lora_te2_": ("kohya", "te2"),
    "lora_te3_": ("kohya", "te3"),
    "lora_prior_unet_": ("kohya", "prior_unet"),
    "lora_prior_te_": ("kohya", "prior_te"),
    "lora_transformer_": ("ot", "transformer"),
    "lycoris_": ("lycoris", None),  # component from the module name
}

# dotted prefixes, tried in order; component None = decided from the module name
_DOTTED: tuple[tuple[str, str, str | None], ...] = (
    ("unet.base_model.model.", "peft", None),
    ("base_model.model.", "peft", None),
    ("model.diffusion_model.", "native", None),
    ("diffusion_model.", "native", None),
    ("text_encoders.", "native_te", None),
    ("text_encoder_2.", "diffusers", "te2"),
    ("text_encoder_3.", "diffusers", "te3"),
    ("text_encoder.", "diffusers", "te"),
    ("transformer.", "diffusers", "transformer"),
    ("unet.", "diffusers", "unet"),
    ("clip_l.", "omi", "te1"),
    ("clip_g.", "omi", "te2"),
    ("t5.", "omi", "te3"),
)
_DOTTED_BY_HEAD: dict[str, list[tuple[str, str, str | None]]] = {}
for _entry in _DOTTED:
    _DOTTED_BY_HEAD.setdefault(_entry[0].partition(".")[0], []).append(_entry)
_COMFY_TE = {"clip_l": "te1", "clip_g": "te2", "t5xxl": "te3", "t5": "te3"}
_DIFFUSERS_PREFIX_OF = {"unet": "unet", "transformer": "transformer", "te": "text_encoder",
                        "te1": "text_encoder", "te2": "text_encoder_2", "te3": "text_encoder_3"}

_UNET_MODULE_RE = re.compile(
    r"(?:down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block|conv_in|conv_out|"
    r"conv_norm_out|time_embedding|time_embed|add_embedding|label_emb)(?:[._]|$)"
)
_CLONE_RE = re.compile(r"(unet|text_encoder):(\d{1,9}):(up|down)")
_VISION_RE = re.compile(r"w_([ab])_(\d{1,6})")
_TOKEN_RE = re.compile(r"<[^<>]{1,100}>")
_WHOLE_FILE_EMB = frozenset({"emb_params", "clip_l", "clip_g", "t5"})

_DIFFUSION_MARK = re.compile(
    r"(?:^|[._])(?:down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block|transformer_blocks|"
    r"double_blocks|single_blocks|joint_blocks|attn1|attn2|img_attn|txt_attn|img_mlp|txt_mlp|img_mod|"
    r"noise_refiner|context_refiner|x_embedder|context_embedder|img_in|txt_in|time_in|final_layer|"
    r"cross_attn|adaLN_modulation|adaln_modulation|proj_in|proj_out|to_q|to_k|to_v|to_out|"
    # S3-DiT (Z-Image, Lumina 2) and Cosmos (Anima) block names
    r"attention[._](?:qkv|out|to_q|to_k|to_v|to_out)|feed_forward|mlp[._]layer[12]|llm_adapter|"
    r"blocks[._]\d+[._](?:self|cross)_attn)(?:[._]|$)"
)
_LLM_MARK = re.compile(
    r"(?:^|[._])(?:layers?|h)[._]\d+[._](?:self_attn[._](?:q_proj|k_proj|v_proj|o_proj)|"
    r"mlp[._](?:gate_proj|up_proj|down_proj)|attention[._]self[._](?:query|key|value)|"
    r"attention[._]output[._]dense|attn[._]c_attn)(?:[._]|$)|(?:^|[._])lm_head$"
)
_LLM_HINT_RE = re.compile(r"_proj|query|key|value|dense|c_attn|lm_head")
_SPLIT_QKV_RE = re.compile(r"(?:^|_)(?:img|txt)_attn_qkv$|(?:^|_)single_blocks_\d+_linear1$")

_NOT_FACTORS = frozenset({"alpha", "set_weight", "weight", "on_input"})
_CONVENTION = {
    "kohya": "kohya", "comfy-native": "kohya", "simpletuner-lycoris": "kohya", "onetrainer": "kohya",
    "diffusers-peft": "peft", "peft": "peft",
    "xlabs": "unit", "ai-toolkit": "unit", "bfl-control": "unit", "cloneofsimo": "unit",
    "diffusers-legacy": "unit", "textual-inversion": "unit", "unknown": "unit",
}

_EXAMPLES = 5


# ------------------------------------------------------------------------------------------------------
# bounded JSON for metadata strings


def parse_json_bounded(text, max_chars: int | None = None, max_depth: int | None = None):
    """``(value, None)`` for strict JSON inside a metadata string, else ``(None, reason)``.

    Delegates to :func:`audit.container.parse_nested_json` (size cap, depth measured before parsing, no
    NaN/Infinity, no duplicate keys, no lone surrogates); ``max_chars``/``max_depth`` tighten its limits.
    """
    limits = Limits()
    if max_chars is not None:
        limits = dataclasses.replace(limits, max_nested_json_bytes=min(max_chars, limits.max_nested_json_bytes))
    if max_depth is not None:
        limits = dataclasses.replace(limits, max_nested_json_depth=min(max_depth, limits.max_nested_json_depth))
    try:
        return parse_nested_json(text, limits), None
    except AuditError as e:
        return None, e.message


# ------------------------------------------------------------------------------------------------------
# key splitting


def _named_adapter_suffix(owner: str, name: str, leaf: str):
    """``lora_A.<adapter name>.weight`` and friends (PEFT state dicts that kept the adapter name)."""
    role = _ADAPTER_NAMED.get(owner)
    if role is None or not _ADAPTER_NAME_RE.fullmatch(name):
        return None
    if leaf == "weight":
        return role, _A
    if leaf == "bias" and owner == "lora_B":
        return "lora_up_bias", _A
    return None


def _lookup_suffix(suffix: str):
    hit = _SUFFIX.get(suffix)
    if hit is not None:
        return hit
    parts = suffix.split(".")
    if len(parts) == 3:
        return _named_adapter_suffix(parts[0], parts[1], parts[2])
    return None


def _split_dotted(rest: str):
    """``(module, role, style)`` for a dotted key without its component prefix, or None."""
    parts = rest.rsplit(".", 3)
    n = len(parts)
    if n >= 3:
        last, prev = parts[-1], parts[-2]
        if last == "weight" and (prev == "down" or prev == "up") and n == 4:
            role = "lora_down" if prev == "down" else "lora_up"
            head, owner = parts[0], parts[1]
            if owner == "lora" or owner == "lora_linear_layer":
                return head, role, _L
            m = _XLABS_RE.fullmatch(owner)
            if m and _XLABS_HEAD_RE.search(head) and head.endswith(".processor"):
                base = head[: -len(".processor")]
                if m.group(2) and _XLABS_DOUBLE_RE.fullmatch(base):
                    stream = "img_attn" if m.group(2) == "1" else "txt_attn"
                    return f"{base}.{stream}.{m.group(1)}", role, _X
                return f"{head}.{owner}", role, _X
            if owner.endswith("_lora") and len(owner) > 5:
                proj = owner[:-5]
                if proj == "to_out":
                    proj = "to_out.0"
                base = head[: -len(".processor")] if head.endswith(".processor") else head
                return f"{base}.{proj}", role, _L
        if last == "scale" and (prev == "query_norm" or prev == "key_norm"):
            return rest[: -len(".scale")], "set_weight", _S
    last = parts[-1]
    if n > 3:
        two = f"{parts[-2]}.{last}"
        hit = _SUFFIX.get(f"{parts[-3]}.{two}") or _named_adapter_suffix(parts[-3], parts[-2], last)
        if hit is not None:
            return parts[0], hit[0], hit[1]
    if n > 2:
        hit = _SUFFIX.get(f"{parts[-2]}.{last}")
        if hit is not None:
            return ".".join(parts[:-2]), hit[0], hit[1]
    if n > 1:
        hit = _SUFFIX.get(last)
        if hit is not None:
            return ".".join(parts[:-1]), hit[0], hit[1]
    return None


def _ndim(meta) -> int:
    return len(_shape(meta))


def _shape(meta) -> tuple[int, ...]:
    shape = getattr(meta, "shape", None)
    if shape is None and isinstance(meta, Mapping):
        shape = meta.get("shape")
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return ()


def _example_list(names) -> str:
    shown = []
    for name in names[:_EXAMPLES]:
        text = name if len(name) <= 120 else name[:117] + "..."
        shown.append(repr(text))
    more = f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
    return ", ".join(shown) + more


# ------------------------------------------------------------------------------------------------------
# parse


class _Group:
    __slots__ = ("kind", "component", "module", "parts", "styles")

    def __init__(self, kind: str, component: str, module: str):
        self.kind = kind
        self.component = component
        self.module = module
        self.parts: dict[str, str] = {}
        self.styles: set[str] = set()


def parse(tensors: Mapping[str, TensorMeta], metadata: Mapping[str, str] | None = None) -> FormatResult:
    """Recognise the key format of one file and group its tensors into layers. Linear in the number of keys."""
    metadata = metadata or {}
    has_metadata = bool(metadata)
    names = list(tensors)
    total = len(names)
    out_findings: list[Finding] = []
    unrecognised: list[str] = []

    has_te2 = False
    for name in names:
        if name.startswith("text_encoder_2."):
            has_te2 = True
            break
    whole_file_token = (
        total == 1
        and "." not in names[0]
        and ":" not in names[0]
        and 0 < len(names[0]) <= 100
        and not names[0].startswith(("lora_", "lycoris_"))
        and not _VISION_RE.fullmatch(names[0])
        and _ndim(tensors[names[0]]) in (1, 2)
    )

    groups: dict[str, _Group] = {}
    # denoiser tensors whose component (unet or transformer) is decided per prefix once the whole file is
    # seen: any UNet module name under a prefix makes that prefix a UNet (SDXL ``out_2`` has no marker)
    pending: list[tuple[str, str, str, str, str, str]] = []
    unet_prefixes: set[str] = set()
    # tensors whose role is already taken in their group (two spellings of one part)
    collisions: list[str] = []
    flags = {"bfl_signal": False, "native_alpha": False, "any_alpha": False}

    def add(kind: str, component: str, module: str, role: str, style: str, name: str) -> None:
        key = f"{component}:{module}"
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(kind, component, module)
        if role in g.parts:
            collisions.append(name)
            return
        g.parts[role] = name
        g.styles.add(style)

    for name in names:
        meta = tensors[name]
        # --- textual-inversion vectors (whole file or bundled) ---
        if (
            name in _WHOLE_FILE_EMB
            or whole_file_token
            or (name[:1] == "<" and _TOKEN_RE.fullmatch(name))
            or (has_metadata and metadata.get(name) == "<embed>")
        ):
            if _ndim(meta) in (1, 2):
                add("embedding", "embedding", name, "embedding", "E", name)
                continue
        if name.startswith("string_to_param.") and len(name) > 16:
            add("embedding", "embedding", name[16:], "embedding", "E", name)
            continue
        if name.startswith("bundle_emb.") and len(name) > 11:
            add("embedding", "embedding", name[11:], "embedding", "E", name)
            continue
        # --- cloneofsimo ---
        if ":" in name:
            m = _CLONE_RE.fullmatch(name)
            if m:
                comp = "unet" if m.group(1) == "unet" else "te"
                add("clone", comp, m.group(2), "lora_down" if m.group(3) == "down" else "lora_up", _K, name)
            else:
                unrecognised.append(name)
            continue
        # --- LoRA-ViT / SAM-LoRA ---
        m = _VISION_RE.fullmatch(name) if name[:2] == "w_" else None
        if m:
            letter_role = "lora_down" if m.group(1) == "a" else "lora_up"
            shape = _shape(meta)
            role = letter_role
            if len(shape) == 2 and shape[0] != shape[1]:
                role = "lora_down" if shape[0] < shape[1] else "lora_up"
            g = groups.get(f"vision:{m.group(2)}")
            if g is not None and role in g.parts:
                # both factors stored in the same orientation: the letters decide for the pair (a down, b up)
                g.parts["lora_up" if letter_role == "lora_down" else "lora_down"] = g.parts.pop(role)
                role = letter_role
            add("vision", "vision", m.group(2), role, _K, name)
            continue
        # --- kohya-flattened prefixes ---
        m = _KOHYA_RE.fullmatch(name) if name.startswith(("lora_", "lycoris_")) else None
        if m:
            hit = _lookup_suffix(m.group(3))
            if hit is None:
                unrecognised.append(name)
                continue
            prefix = m.group(1)
            kind, comp = _KOHYA_COMPONENT[prefix]
            module = m.group(2)
            if prefix == "lora_unet_" and module.startswith("_"):
                module = module[1:]  # Z-Image: lora_unet__layers_0_...
            if hit[0] == "alpha":
                flags["any_alpha"] = True
            if comp is None:
                if _UNET_MODULE_RE.match(module):
                    unet_prefixes.add(prefix)
                pending.append((prefix, kind, module, hit[0], hit[1], name))
            else:
                add(kind, comp, module, hit[0], hit[1], name)
            continue
        # --- dotted names ---
        kind, comp, rest = "none", None, name
        for prefix, pkind, pcomp in _DOTTED_BY_HEAD.get(name.partition(".")[0], ()):
            if name.startswith(prefix):
                kind, comp, rest = pkind, pcomp, name[len(prefix):]
                break
        split = _split_dotted(rest) if rest else None
        if split is None or not split[0]:
            unrecognised.append(name)
            continue
        module, role, style = split
        if kind == "native_te":
            comp = _COMFY_TE.get(module.split(".", 1)[0], "te")
        elif comp is None and kind == "none" and module.startswith("text_model."):
            comp = "te"
        elif comp == "te" and has_te2 and kind == "diffusers":
            comp = "te1"
        if role == "alpha":
            flags["any_alpha"] = True
            if kind == "native":
                flags["native_alpha"] = True
        if kind == "none" and (role == "lora_up_bias" or style == _S):
            flags["bfl_signal"] = True
        if comp is None:
            if _UNET_MODULE_RE.match(module):
                unet_prefixes.add(kind)
            pending.append((kind, kind, module, role, style, name))
        else:
            add(kind, comp, module, role, style, name)

    for prefix, kind, module, role, style, name in pending:
        add(kind, "unet" if prefix in unet_prefixes else "transformer", module, role, style, name)

    # --- metadata signals ---
    ai_toolkit = False
    software = metadata.get("software")
    if isinstance(software, str):
        value, _ = parse_json_bounded(software, max_chars=65536)
        ai_toolkit = isinstance(value, dict) and value.get("name") == "ai-toolkit"
    has_ss = any(isinstance(k, str) and k.startswith("ss_") for k in metadata)
    onetrainer_meta = "ot_branch" in metadata or (
        not has_ss and any(isinstance(k, str) and k.startswith("modelspec.") for k in metadata)
    )
    # parameter-replacement scales count only in a file that also holds adapter factors
    has_lora_groups = any(
        g.kind not in ("embedding", "vision") and set(g.parts) - _NOT_FACTORS for g in groups.values()
    )

    # --- finalise groups: drop parts that are not valid on their own ---
    final: list[LayerGroup] = []
    fmt_count: dict[str, int] = {}
    embeddings = 0
    for key in sorted(groups):
        g = groups[key]
        if "weight" in g.parts and _I in g.styles and "on_input" not in g.parts:
            unrecognised.append(g.parts.pop("weight"))  # a bare `.weight` is IA3 only beside `on_input`
            g.styles.discard(_I)
        if "set_weight" in g.parts and _S in g.styles and not has_lora_groups:
            unrecognised.append(g.parts.pop("set_weight"))  # norm scales of a checkpoint, not an adapter
            g.styles.discard(_S)
        if not g.parts:
            continue
        fmt = _group_format(g, flags, ai_toolkit, onetrainer_meta)
        if fmt == "textual-inversion":
            embeddings += 1
        final.append(LayerGroup(key=key, component=g.component, module=g.module, parts=dict(g.parts), format=fmt))
        fmt_count[fmt] = fmt_count.get(fmt, 0) + len(g.parts)

    unrecognised.extend(collisions)
    unrecognised.sort()
    recognised = sum(fmt_count.values())
    assert recognised + len(unrecognised) == total

    dominant = "unknown"
    if fmt_count:
        dominant = max(sorted(fmt_count), key=lambda f: fmt_count[f])

    scale, scale_findings = _scale_context(dominant, final, metadata, flags)
    out_findings.extend(scale_findings)

    if unrecognised:
        out_findings.append(findings.make(
            "LA201",
            f"{len(unrecognised)} of {total} tensor(s) assigned to no layer: {_example_list(unrecognised)}",
        ))
    out_findings.extend(_split_qkv_findings(final, tensors, metadata))
    out_findings.extend(_clone_rank_findings(final, tensors, metadata))

    hint, reason = _domain(final, unrecognised, total)
    return FormatResult(
        format=dominant,
        formats=dict(sorted(fmt_count.items())),
        groups=final,
        unrecognised=unrecognised,
        recognised=recognised,
        total=total,
        scale=scale,
        domain_hint=hint,
        domain_reason=reason,
        findings=out_findings,
        embeddings=embeddings,
    )


def _group_format(g: _Group, flags: dict, ai_toolkit: bool, onetrainer_meta: bool) -> str:
    kind, styles = g.kind, g.styles
    if kind == "embedding":
        return "textual-inversion"
    if kind == "vision":
        return "unknown"
    if kind == "clone":
        return "cloneofsimo"
    if _X in styles:
        return "xlabs"
    if ai_toolkit:
        return "ai-toolkit"
    if kind == "kohya":
        return "onetrainer" if onetrainer_meta else "kohya"
    if kind in ("ot", "omi"):
        return "onetrainer"
    if kind == "lycoris":
        return "simpletuner-lycoris"
    if kind == "peft":
        return "peft"
    if kind == "diffusers":
        if _L in styles:
            return "diffusers-legacy"
        if _A in styles:
            return "diffusers-peft"
        return "onetrainer"  # OneTrainer OMI / BFL layouts: dotted names with kohya suffixes
    if kind == "native":
        if _A in styles and not flags["native_alpha"]:
            return "ai-toolkit"
        return "comfy-native"
    if kind == "native_te":
        return "comfy-native"
    # no prefix
    if _L in styles:
        return "diffusers-legacy"
    if (_A in styles or _S in styles) and flags["bfl_signal"]:
        return "bfl-control"
    return "comfy-native"


# ------------------------------------------------------------------------------------------------------
# scale context


def _scale_context(dominant: str, groups: list[LayerGroup], metadata, flags) -> tuple[ScaleContext, list[Finding]]:
    convention = _CONVENTION.get(dominant, "unit")
    if dominant in ("diffusers-legacy", "ai-toolkit") and flags["any_alpha"]:
        convention = "kohya"
    if convention == "kohya":
        src = ("per-module alpha tensors" if flags["any_alpha"]
               else "no alpha tensors: alpha = rank (scale 1)")
        return ScaleContext(convention="kohya", source=src), []
    if convention == "unit":
        if dominant == "unknown":
            return ScaleContext(convention="unit", source="no known key format: scale 1"), []
        return ScaleContext(convention="unit", source=f"{dominant} format defines no alpha: scale 1"), []
    return _peft_scale(groups, metadata)


def _as_pos_int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and 0 < v < 1 << 31:
        return v
    if isinstance(v, float) and v.is_integer() and 0 < v < 2**31:
        return int(v)
    return None


def _as_alpha(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and v >= 0 else None


def _clean_config(cfg: dict) -> dict:
    out: dict = {"r": _as_pos_int(cfg.get("r")), "lora_alpha": _as_alpha(cfg.get("lora_alpha")),
                 "use_rslora": cfg.get("use_rslora") is True, "rank_pattern": {}, "alpha_pattern": {}}
    rp, ap = cfg.get("rank_pattern"), cfg.get("alpha_pattern")
    if isinstance(rp, dict):
        out["rank_pattern"] = {k: v for k, v in ((k, _as_pos_int(v)) for k, v in rp.items())
                               if isinstance(k, str) and k and v is not None}
    if isinstance(ap, dict):
        out["alpha_pattern"] = {k: v for k, v in ((k, _as_alpha(v)) for k, v in ap.items())
                                if isinstance(k, str) and k and v is not None}
    return out


def _match_suffix(patterns: dict, module: str):
    """Value of the longest key equal to ``module`` or a ``.``-bounded suffix of it (literal comparison).

    Walks the module's own suffixes, longest first, so the cost is the module's depth, not the pattern count.
    """
    if module in patterns:
        return patterns[module]
    i = module.find(".")
    while i != -1:
        suffix = module[i + 1:]
        if suffix in patterns:
            return patterns[suffix]
        i = module.find(".", i + 1)
    return None


def _peft_scale(groups: list[LayerGroup], metadata) -> tuple[ScaleContext, list[Finding]]:
    raw = metadata.get("lora_adapter_metadata")
    if raw is None:
        return ScaleContext(
            convention="peft",
            source="no adapter config (lora_adapter_metadata) in the file: lora_alpha unknown, scale 1 assumed",
        ), []
    value, problem = parse_json_bounded(raw)
    if not isinstance(value, dict):
        why = problem or "not a JSON object"
        return ScaleContext(
            convention="peft",
            source="lora_adapter_metadata unreadable: scale 1 assumed",
        ), [findings.make("LA159", f"lora_adapter_metadata ignored: {why}", "__metadata__.lora_adapter_metadata")]

    configs: dict[str | None, dict] = {}
    if "r" in value or "lora_alpha" in value:
        configs[None] = _clean_config(value)
    else:
        per: dict[str, dict] = {}
        for k, v in value.items():
            if isinstance(k, str) and "." in k:
                prefix, _, fieldname = k.partition(".")
                per.setdefault(prefix, {})[fieldname] = v
        for prefix, cfg in per.items():
            configs[prefix] = _clean_config(cfg)
    if not configs:
        return ScaleContext(convention="peft", source="lora_adapter_metadata holds no LoRA config: scale 1 assumed"), []

    def prefix_of(g: LayerGroup) -> str | None:
        return None if None in configs else _DIFFUSERS_PREFIX_OF.get(g.component)

    counts: dict[str | None, int] = {}
    for g in groups:
        p = prefix_of(g)
        if p in configs:
            counts[p] = counts.get(p, 0) + 1
    if counts:
        primary = max(sorted(counts, key=lambda p: p or ""), key=lambda p: counts[p])
    else:
        primary = sorted(configs, key=lambda p: p or "")[0]
    cfg = configs[primary]
    ctx = ScaleContext(
        convention="peft",
        lora_alpha=cfg["lora_alpha"],
        r=cfg["r"],
        use_rslora=cfg["use_rslora"],
        rank_pattern=dict(cfg["rank_pattern"]),
        alpha_pattern=dict(cfg["alpha_pattern"]),
        source="metadata:lora_adapter_metadata" + (f" ({primary})" if primary else ""),
    )
    # other components' configs: resolved per module and written as exact module entries (the longest
    # matching pattern wins, and an exact module path is the longest possible match)
    for g in groups:
        p = prefix_of(g)
        if p is None or p == primary or p not in configs:
            continue
        other = configs[p]
        a = _match_suffix(other["alpha_pattern"], g.module)
        a = other["lora_alpha"] if a is None else a
        r = _match_suffix(other["rank_pattern"], g.module)
        r = other["r"] if r is None else r
        if a is not None:
            ctx.alpha_pattern[g.module] = a
        if r is not None:
            ctx.rank_pattern[g.module] = r
    return ctx, []


# ------------------------------------------------------------------------------------------------------
# findings that depend on shapes


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("true", "1", "yes"))


def _split_qkv_findings(groups: list[LayerGroup], tensors, metadata) -> list[Finding]:
    """LA213: kohya FLUX ``split_qkv`` files store Q/K/V(/MLP) LoRAs merged: down ``[n·r, in]`` stacked, up
    ``[out, n·r]`` block-diagonal. Flagged when the network args say ``split_qkv`` (equal inner dims), or when
    the down factor has exactly n times the up factor's rank (converters that keep one up per projection
    chunk)."""
    split_declared = False
    args = metadata.get("ss_network_args")
    if isinstance(args, str):
        value, _ = parse_json_bounded(args, max_chars=65536)
        split_declared = isinstance(value, dict) and _truthy(value.get("split_qkv"))
    merged, chunked = [], []
    for g in groups:
        if g.format not in ("kohya", "onetrainer", "ai-toolkit"):
            continue
        if not (("attn_qkv" in g.module or "linear1" in g.module) and _SPLIT_QKV_RE.search(g.module)):
            continue
        down, up = g.parts.get("lora_down"), g.parts.get("lora_up")
        if down is None or up is None:
            continue
        ds, us = _shape(tensors[down]), _shape(tensors[up])
        if len(ds) != 2 or len(us) != 2:
            continue
        n = 4 if g.module.endswith("linear1") else 3
        if split_declared and ds[0] == us[1] and ds[0] % n == 0:
            merged.append(g.key)
        elif ds[0] != us[1] and us[1] > 0 and ds[0] in (3 * us[1], 4 * us[1]):
            chunked.append(g.key)
    out = []
    if merged:
        out.append(findings.make(
            "LA213",
            f"{len(merged)} layer(s) saved from split_qkv training (ss_network_args): down stacks one factor "
            f"per projection, up is block-diagonal; e.g. {_example_list(merged)}",
        ))
    if chunked:
        out.append(findings.make(
            "LA213",
            f"{len(chunked)} layer(s) have a down factor with 3 or 4 times the up factor's rank (merged "
            f"per-projection factors); e.g. {_example_list(chunked)}",
        ))
    return out


def _clone_rank_findings(groups: list[LayerGroup], tensors, metadata) -> list[Finding]:
    """LA211 for cloneofsimo files whose ``<component>:<idx>:rank`` metadata disagrees with the stored rank."""
    bad = []
    for g in groups:
        if g.format != "cloneofsimo":
            continue
        comp = "unet" if g.component == "unet" else "text_encoder"
        declared = metadata.get(f"{comp}:{g.module}:rank")
        down = g.parts.get("lora_down")
        if not isinstance(declared, str) or down is None:
            continue
        text = declared.strip()
        if not (0 < len(text) <= 9 and text.isascii() and text.isdigit()):
            continue
        shape = _shape(tensors[down])
        if shape and int(text) != shape[0]:
            bad.append(f"{g.key} (declared {int(text)}, stored {shape[0]})")
    if not bad:
        return []
    return [findings.make("LA211", f"{len(bad)} layer(s) with a declared rank that differs from the stored "
                                   f"rank: {_example_list(bad)}")]


# ------------------------------------------------------------------------------------------------------
# domain


def _domain(groups: list[LayerGroup], unrecognised: list[str], total: int) -> tuple[str | None, str | None]:
    adapter_groups = [g for g in groups if g.component != "embedding" and set(g.parts) - {"alpha"}]
    embeddings = [g for g in groups if g.component == "embedding"]
    if total and not adapter_groups and not embeddings:
        peft_other = [n for n in unrecognised if n.startswith("base_model.")]
        if peft_other:
            return "not-a-lora", (
                f"{len(peft_other)} tensor(s) carry PEFT names of a non-LoRA method (e.g. "
                f"{_example_list(peft_other[:1])}) and no LoRA factor is present"
            )
        return "not-a-lora", f"none of the {total} tensor(s) has an adapter or embedding name"
    vision = [g for g in adapter_groups if g.component == "vision"]
    if vision and len(vision) == len(adapter_groups):
        return "not-diffusion", (
            f"{len(vision)} layer(s) use the LoRA-ViT / SAM-LoRA names w_a_NNN/w_b_NNN of a vision-transformer "
            "adapter, and no diffusion module name is present"
        )
    candidates = [g for g in adapter_groups if g.component not in ("te", "te1", "te2", "te3", "prior_te")]
    llm = [g for g in candidates if _LLM_HINT_RE.search(g.module) and _LLM_MARK.search(g.module)]
    if llm and not any(_DIFFUSION_MARK.search(g.module) for g in candidates):
        return "not-diffusion", (
            f"{len(llm)} layer(s) carry language-model module names (e.g. layers.N.self_attn.q_proj) and "
            "no diffusion module name is present"
        )
    return None, None
