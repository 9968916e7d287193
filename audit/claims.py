"""Training metadata read as claims: typed, checked, never trusted.

:func:`read` turns a file's ``__metadata__`` (and, for a PEFT directory, its ``adapter_config.json``) into the
:class:`~audit.record.Claims` part of the record: which trainer wrote the file, its training parameters as typed
values under stable snake_case keys, the ``modelspec.*`` fields, the statements about the base model (the
family/variant verdicts are audit/fingerprint's), trigger words with every source that names them, the
per-folder tag frequencies, and whether the declared rank and alpha match the layers actually stored.

Every value is attacker-controlled text: it is parsed with fixed ASCII grammars (never used as a regular
expression, format string or path), bounded in length and count, and a malformed value is left out with one
LA312 finding per key. Nothing here reads a file.

What the writers put where (facts, with the source they were read from):

* kohya-ss/sd-scripts @ 0010c81a, ``train_network.py``: the ``ss_*`` dict, every value ``str()``-ed (so an unset
  value is ``"None"``, a bool ``"True"``/``"False"``, ``ss_resolution`` a tuple ``"(768, 768)"``,
  ``ss_training_started_at`` ``str(time.time())``), ``ss_optimizer`` = ``name(k=v,k=v)``, ``ss_tag_frequency``
  JSON ``{folder: {tag: count}}``, ``ss_dataset_dirs`` JSON ``{folder: {"n_repeats", "img_count"}}``,
  ``ss_network_args`` JSON of the ``key=value`` network args, ``ss_datasets`` (dataset-config mode) with each
  subset's ``class_tokens``; ``library/sai_model_spec.py`` (@ 10bfcb9a): the ``modelspec.*`` keys.
* sd-scripts ``networks/lora.py`` ``create_network``: ``conv_dim`` applies to kernels larger than 1x1 and
  ``conv_alpha`` defaults to 1.0 when only ``conv_dim`` is given; alpha 0 or None is replaced by the rank.
  KohakuBlueleaf/LyCORIS @ 044492d5, ``lycoris/kohya.py``: ``conv_dim`` defaults to ``network_dim`` and
  ``conv_alpha`` to ``network_alpha``; 1x1 convolutions take the linear dim; ``lycoris/config.py``: the
  built-in presets (none sets per-module dims).
* kohya-ss/musubi-tuner @ 6247ca96, ``dataset/architectures.py`` and ``hv_train_network.py``: the same ``ss_*``
  scheme with ``ss_base_model_version`` = the architecture's full name and ``ss_num_train_items``.
* ostris/ai-toolkit, ``toolkit/metadata.py`` (``get_meta_for_safetensors``, ``add_base_model_info_to_meta``) and
  ``jobs/process/BaseSDTrainProcess.py`` (``update_training_metadata``):
  ``software`` = JSON ``{"name": "ai-toolkit", ...}``, ``format: pt``, ``training_info`` = JSON
  ``{"step", "epoch"}``, ``ss_base_model_version`` (``sd_1.5``, ``sdxl_1.0``, ``flux.1``, ...),
  ``ss_base_model`` (``add_base_model_info_to_meta``), and the trigger word only as
  ``ss_tag_frequency = {"1_<trigger>": {"<trigger>": 1}}``.
* Nerogar/OneTrainer, ``BaseModelSaver._create_safetensors_header``: ``modelspec.*``
  (``modules/util/modelSpec/ModelSpec.py`` @ 84e9b98f, empty strings for unset fields), ``ot_branch``,
  ``ot_revision``, optionally ``ot_config`` (the JSON training config, ``modules/util/config/TrainConfig.py``
  @ 00f380ac), and ``ss_base_model_version = "sdxl_"`` / ``ss_v2 = "True"`` for A1111.
* huggingface/diffusers ``loaders/lora_base.py``: the PEFT ``LoraConfig`` under ``lora_adapter_metadata``;
  PEFT ``adapter_config.json``: ``peft_type``, ``r``, ``lora_alpha`` (LoHa/LoKr: ``alpha``), ``rank_pattern``,
  ``alpha_pattern``, ``base_model_name_or_path``.
* sd-webui-additional-networks user metadata: ``ssmd_keywords`` (comma-separated trigger words).
* SimpleTuner's LyCORIS documentation: a ``lycoris_config`` JSON with ``algo``, ``linear_dim``,
  ``linear_alpha``, ``conv_dim``, ``conv_alpha``.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from audit import findings
from audit.adapters.scale import match_pattern
from audit.findings import Finding
from audit.formats import parse_json_bounded
from audit.record import (
    Claim,
    Claims,
    DatasetFolder,
    LayerRecord,
    LicenseClaim,
    TagCount,
    TriggerWord,
)

# ---------------------------------------------------------------------------------------------------------
# bounds (every attacker-controlled collection and string is cut to these)

MAX_TEXT = 4096  # modelspec values, training comments
MAX_STR = 512  # names, short strings
MAX_TAG = 256  # one tag, one trigger word
MAX_KEY = 128  # a dict key copied into the record
MAX_ITEMS = 64  # entries kept of a nested list/dict (network args, adapter config fields)
MAX_FOLDERS = 256
MAX_TOP_TAGS = 20
MAX_TRIGGERS = 64
MAX_MODELSPEC = 128
MAX_NUMBER_CHARS = 64
MAX_VALUE = 10**12  # a count, step or size above this is absurd
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
ARGS_JSON_CHARS = 65536
TRIGGER_SHARE = 0.9  # a folder's top tag is a trigger when it is in at least this share of the images
ALPHA_REL_TOL = 2.0**-8  # alpha tensors saved in bfloat16 carry 8 significant bits

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SPLIT_QKV_MODULE = re.compile(r"(?:^|_)(?:img|txt)_attn_qkv$|(?:^|_)single_blocks_\d+_linear1$", re.ASCII)
_ABSENT = frozenset({"", "none", "null"})
_HEX = frozenset("0123456789abcdefABCDEF")
_PATTERN_META = frozenset("^$*+?()[]{}|\\")

# adapter kinds whose LayerRecord.rank is the trainer's dim and whose alpha is a multiplier (audit/adapters):
# lora/locon/dora: lora_down rows; lora-tucker: the down rank; loha: hada_w1_b rows; lokr: the rank of its
# decomposed factor (None when both factors are stored full); glora: b1/b2 inner dim. OFT/BOFT/IA3/full/norm
# have no rank, and a textual inversion's "rank" counts its vectors.
_RANKED_KINDS = frozenset({"lora", "locon", "lora-tucker", "loha", "lokr", "dora", "glora"})
_LYCORIS_PRESETS = frozenset(
    {"full", "full-lin", "attn-mlp", "attn-only", "unet-only", "unet-transformer-only", "unet-convblock-only", "ia3"}
)

# musubi-tuner: network modules sd-scripts does not have, and the architecture full names it writes into
# ss_base_model_version (src/musubi_tuner/networks/, dataset/architectures.py)
_MUSUBI_MODULES = frozenset(
    {
        "networks.lora_wan", "networks.lora_framepack", "networks.lora_flux_2", "networks.lora_hv_1_5",
        "networks.lora_kandinsky", "networks.lora_qwen_image", "networks.lora_qwen_image_21",
        "networks.lora_zimage", "networks.lora_ernie_image", "networks.lora_hidream_o1",
        "networks.lora_ideogram4", "networks.lora_mage_flow",
    }
)
_MUSUBI_ARCHS = frozenset(
    {
        "hunyuan_video", "wan", "framepack", "flux_kontext", "flux_2_dev", "flux_2_klein_4b", "flux_2_klein_9b",
        "qwen_image", "qwen_image_edit", "qwen_image_layered", "kandinsky5", "hunyuan_video_1_5", "z_image",
        "ernie_image",
    }
)

# ss_* key -> (typed key, kind, low, high). Kinds: int, float, number (int when integral), bool, str, text,
# hex. Keys with their own grammar (dim, alpha, args, optimizer, resolution, lr lists, timestamps) are read
# apart.
_SS_FIELDS: tuple[tuple[str, str, str, float | None, float | None], ...] = (
    ("ss_network_module", "network_module", "str", None, None),
    ("ss_network_dropout", "network_dropout", "float", 0, 1),
    ("ss_learning_rate", "learning_rate", "float", 0, MAX_VALUE),
    ("ss_unet_lr", "unet_lr", "float", 0, MAX_VALUE),
    ("ss_lr_scheduler", "lr_scheduler", "str", None, None),
    ("ss_lr_warmup_steps", "lr_warmup_steps", "number", 0, MAX_VALUE),
    ("ss_num_epochs", "epochs", "int", 0, MAX_VALUE),
    ("ss_epoch", "epoch", "int", 0, MAX_VALUE),
    ("ss_max_train_steps", "max_train_steps", "int", 0, MAX_VALUE),
    ("ss_steps", "steps", "int", 0, MAX_VALUE),
    ("ss_batch_size_per_device", "batch_size", "int", 1, MAX_VALUE),
    ("ss_total_batch_size", "total_batch_size", "int", 1, MAX_VALUE),
    ("ss_gradient_accumulation_steps", "gradient_accumulation", "int", 1, MAX_VALUE),
    ("ss_num_train_images", "num_train_images", "int", 0, MAX_VALUE),
    ("ss_num_train_items", "num_train_items", "int", 0, MAX_VALUE),
    ("ss_num_reg_images", "num_reg_images", "int", 0, MAX_VALUE),
    ("ss_num_validation_images", "num_validation_images", "int", 0, MAX_VALUE),
    ("ss_num_batches_per_epoch", "num_batches_per_epoch", "int", 0, MAX_VALUE),
    ("ss_mixed_precision", "mixed_precision", "str", None, None),
    ("ss_full_fp16", "full_fp16", "bool", None, None),
    ("ss_full_bf16", "full_bf16", "bool", None, None),
    ("ss_fp8_base", "fp8_base", "bool", None, None),
    ("ss_seed", "seed", "int", -(2**63), 2**64),
    ("ss_clip_skip", "clip_skip", "int", 0, MAX_VALUE),
    ("ss_max_token_length", "max_token_length", "int", 0, MAX_VALUE),
    ("ss_noise_offset", "noise_offset", "float", -MAX_VALUE, MAX_VALUE),
    ("ss_multires_noise_iterations", "multires_noise_iterations", "int", 0, MAX_VALUE),
    ("ss_multires_noise_discount", "multires_noise_discount", "float", -MAX_VALUE, MAX_VALUE),
    ("ss_adaptive_noise_scale", "adaptive_noise_scale", "float", -MAX_VALUE, MAX_VALUE),
    ("ss_min_snr_gamma", "min_snr_gamma", "float", 0, MAX_VALUE),
    ("ss_ip_noise_gamma", "ip_noise_gamma", "float", 0, MAX_VALUE),
    ("ss_zero_terminal_snr", "zero_terminal_snr", "bool", None, None),
    ("ss_debiased_estimation", "debiased_estimation", "bool", None, None),
    ("ss_loss_type", "loss_type", "str", None, None),
    ("ss_max_grad_norm", "max_grad_norm", "float", 0, MAX_VALUE),
    ("ss_scale_weight_norms", "scale_weight_norms", "float", 0, MAX_VALUE),
    ("ss_prior_loss_weight", "prior_loss_weight", "float", 0, MAX_VALUE),
    ("ss_caption_dropout_rate", "caption_dropout_rate", "float", 0, 1),
    ("ss_caption_dropout_every_n_epochs", "caption_dropout_every_n_epochs", "int", 0, MAX_VALUE),
    ("ss_caption_tag_dropout_rate", "caption_tag_dropout_rate", "float", 0, 1),
    ("ss_keep_tokens", "keep_tokens", "int", 0, MAX_VALUE),
    ("ss_shuffle_caption", "shuffle_caption", "bool", None, None),
    ("ss_flip_aug", "flip_aug", "bool", None, None),
    ("ss_color_aug", "color_aug", "bool", None, None),
    ("ss_random_crop", "random_crop", "bool", None, None),
    ("ss_enable_bucket", "enable_bucket", "bool", None, None),
    ("ss_bucket_no_upscale", "bucket_no_upscale", "bool", None, None),
    ("ss_min_bucket_reso", "min_bucket_reso", "int", 0, MAX_VALUE),
    ("ss_max_bucket_reso", "max_bucket_reso", "int", 0, MAX_VALUE),
    ("ss_cache_latents", "cache_latents", "bool", None, None),
    ("ss_gradient_checkpointing", "gradient_checkpointing", "bool", None, None),
    ("ss_sd_model_name", "base_model_name", "str", None, None),
    ("ss_sd_model_hash", "base_model_hash", "hex", None, None),
    ("ss_new_sd_model_hash", "base_model_sha256", "hex", None, None),
    ("ss_vae_name", "vae_name", "str", None, None),
    ("ss_vae_hash", "vae_hash", "hex", None, None),
    ("ss_new_vae_hash", "vae_sha256", "hex", None, None),
    ("ss_output_name", "output_name", "str", None, None),
    ("ss_training_comment", "training_comment", "text", None, None),
    ("ss_session_id", "session_id", "int", 0, 2**64),
    ("ss_sd_scripts_commit_hash", "trainer_version", "hex", None, None),
    ("ss_timestep_sampling", "timestep_sampling", "str", None, None),
    ("ss_weighting_scheme", "weighting_scheme", "str", None, None),
    ("ss_discrete_flow_shift", "discrete_flow_shift", "float", -MAX_VALUE, MAX_VALUE),
    ("ss_guidance_scale", "guidance_scale", "float", -MAX_VALUE, MAX_VALUE),
)

# OneTrainer ot_config field -> (typed key, kind, low, high)
_OT_FIELDS: tuple[tuple[str, str, str, float | None, float | None], ...] = (
    ("base_model_name", "base_model_name", "str", None, None),
    ("model_type", "model_type", "str", None, None),
    ("training_method", "training_method", "str", None, None),
    ("peft_type", "peft_type", "str", None, None),
    ("lora_rank", "network_dim", "int", 1, 2**31),
    ("lora_alpha", "network_alpha", "float", 0, MAX_VALUE),
    ("learning_rate", "learning_rate", "float", 0, MAX_VALUE),
    ("learning_rate_scheduler", "lr_scheduler", "str", None, None),
    ("epochs", "epochs", "int", 0, MAX_VALUE),
    ("batch_size", "batch_size", "int", 1, MAX_VALUE),
    ("gradient_accumulation_steps", "gradient_accumulation", "int", 1, MAX_VALUE),
    ("train_dtype", "train_dtype", "str", None, None),
)


class _Bad(Exception):
    """A value that does not parse as its key's type (the message says why)."""


# ---------------------------------------------------------------------------------------------------------
# public entry point


def read(
    metadata: Mapping[str, str] | None,
    layers: Sequence[LayerRecord],
    *,
    adapter_config: Mapping | None = None,
) -> tuple[Claims, list[Finding]]:
    """The :class:`Claims` of one file and the findings about them (LA211, LA212, LA305, LA312).

    ``metadata`` is the raw ``__metadata__`` (None when the header has none), ``layers`` the analysed layers
    (their ``rank``/``alpha`` are checked against the declared values), ``adapter_config`` the parsed
    ``adapter_config.json`` of a PEFT directory, when one was given.
    """
    return _Reader(metadata, layers, adapter_config).run()


#: metadata keys that state the adapter's own license (SAI ModelSpec ``modelspec.license``, which kohya fills from
#: ``--metadata_license``; a bare ``license`` / ``license_name`` / ``license_link`` as some trainers and
#: re-packagers write them)
LICENSE_KEYS = ("modelspec.license", "license", "license_name", "license_link", "licence")


def license_claims(metadata: Mapping[str, str] | None) -> list[LicenseClaim]:
    """The adapter's own license statements in ``__metadata__``, as written (checked by audit/licensing)."""
    out = []
    for key in LICENSE_KEYS:
        value = (metadata or {}).get(key)
        if isinstance(value, str) and value.strip() and value.strip().casefold() not in ("none", "unknown"):
            out.append(LicenseClaim(source="metadata", key=key, value=_cut(value.strip(), MAX_TEXT)))
    return out


def add_triggers(claims: Claims, pairs: Iterable[tuple[str, str]]) -> None:
    """Merge ``(word, source)`` pairs (e.g. from sidecars) into ``claims.triggers``, case-insensitively."""
    index = {t.word.casefold(): t for t in claims.triggers}
    for word, source in pairs:
        word = _cut(word.strip(), MAX_TAG)
        if not word:
            continue
        entry = index.get(word.casefold())
        if entry is None:
            if len(claims.triggers) >= MAX_TRIGGERS:
                continue
            entry = index[word.casefold()] = TriggerWord(word=word)
            claims.triggers.append(entry)
        if source not in entry.sources:
            entry.sources.append(source)


def all_tags(metadata: Mapping[str, str] | None, limit: int = 100_000) -> list[str]:
    """Every distinct tag of ``ss_tag_frequency`` (over all folders, first-seen order, at most ``limit``).

    :class:`Claims` keeps only each folder's top tags; a watchlist search needs them all. A malformed value
    gives an empty list here (``read`` reports it as LA312).
    """
    text = (metadata or {}).get("ss_tag_frequency")
    if _absent(text):
        return []
    value, why = parse_json_bounded(text)
    if why is not None or not isinstance(value, dict):
        return []
    seen: dict[str, None] = {}
    for folder in list(value.values())[:MAX_FOLDERS]:
        if isinstance(folder, dict):
            for tag in folder:
                if tag and len(seen) < limit:
                    seen.setdefault(_cut(tag, MAX_TAG))
    return list(seen)


# ---------------------------------------------------------------------------------------------------------
# scalar grammars


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def _show(value: object, limit: int = 60) -> str:
    """A truncated repr of a value for a message (repr escapes control characters)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _absent(value: object) -> bool:
    """Unset: None, or the text a writer puts for None (``str(None)``, ``json.dumps(None)``) or nothing."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _ABSENT)


def _number(value: object) -> float | int:
    """An int or float from JSON or from text in plain ASCII decimal notation."""
    if isinstance(value, bool):
        raise _Bad("a boolean, not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad("not finite")
        return value
    if not isinstance(value, str):
        raise _Bad(f"a {type(value).__name__}, not a number")
    text = value.strip()
    if len(text) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
        raise _Bad("not a number")
    if "." not in text and "e" not in text and "E" not in text:
        return int(text)
    x = float(text)
    if not math.isfinite(x):
        raise _Bad("not finite")
    return x


def _to_int(value: object, lo: float | None, hi: float | None) -> int:
    x = _number(value)
    if isinstance(x, float):
        if not x.is_integer():
            raise _Bad("not an integer")
        x = int(x)
    _check_range(x, lo, hi)
    return x


def _to_float(value: object, lo: float | None, hi: float | None) -> float:
    x = float(_number(value))
    _check_range(x, lo, hi)
    return x


def _to_number(value: object, lo: float | None, hi: float | None) -> int | float:
    x = _number(value)
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    _check_range(x, lo, hi)
    return x


def _check_range(x: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and x < lo:
        raise _Bad(f"below {lo:g}")
    if hi is not None and x > hi:
        raise _Bad(f"above {hi:g}")


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Bad("not True/False")


def _to_str(value: object, limit: int) -> str:
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Bad(f"a {type(value).__name__}, not text")


def _to_hex(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad("not text")
    text = value.strip()
    body = text[2:] if text[:2].lower() == "0x" else text
    if not (0 < len(body) <= 128 and set(body) <= _HEX):
        raise _Bad("not a hexadecimal hash")
    return text


def _to_time(value: object) -> tuple[str, float]:
    """Unix seconds (``str(time.time())``) -> (ISO-8601 UTC to the second, the seconds)."""
    t = float(_number(value))
    if not 0 < t <= MAX_TIMESTAMP:
        raise _Bad("not a Unix time between 1970 and 9999")
    moment = datetime.datetime.fromtimestamp(math.floor(t), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), t


def _typed(value: object, kind: str, lo: float | None, hi: float | None) -> Any:
    if kind == "int":
        return _to_int(value, lo, hi)
    if kind == "float":
        return _to_float(value, lo, hi)
    if kind == "number":
        return _to_number(value, lo, hi)
    if kind == "bool":
        return _to_bool(value)
    if kind == "str":
        return _to_str(value, MAX_STR)
    if kind == "text":
        return _to_str(value, MAX_TEXT)
    if kind == "hex":
        return _to_hex(value)
    raise AssertionError(kind)


def _resolution(value: object) -> list[int]:
    """kohya ``ss_resolution`` -> [width, height]: ``"(512, 768)"``, ``"512,768"``, ``"512"``, ``"[512, 768]"``
    or ``"512x768"`` (sd-scripts reads ``--resolution`` as ``width,height`` and stores the tuple)."""
    if isinstance(value, int) and not isinstance(value, bool):
        parts: list[object] = [value]
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS:
            raise _Bad("too long")
        if text[:1] in "([" and text[-1:] in ")]":
            text = text[1:-1]
        sep = "," if "," in text else "x"
        parts = [p for p in text.split(sep)]
        if len(parts) == 2 and parts[1].strip() == "" and sep == ",":  # "(512,)"
            parts = parts[:1]
    else:
        raise _Bad("not a resolution")
    if not 1 <= len(parts) <= 2:
        raise _Bad("not one or two sizes")
    sizes = [_to_int(p, 1, 2**20) for p in parts]
    return sizes if len(sizes) == 2 else [sizes[0], sizes[0]]


def _bounded(value: object, depth: int = 0) -> Any:
    """A JSON value cut to bounded size for the record: strings, item counts and depth."""
    if isinstance(value, str):
        return _cut(value, MAX_STR)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    if depth >= 3:
        return None
    if isinstance(value, list):
        return [_bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {_cut(str(k), MAX_KEY): _bounded(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return None


def _top_level_split(text: str) -> list[str]:
    """Split at commas outside (), [] and {} (kohya joins optimizer args ``k=v`` with "," and a value may be a
    tuple such as ``betas=(0.9, 0.99)``)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise _Bad("unbalanced brackets")
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise _Bad("unbalanced brackets")
    out.append(text[start:])
    return out


def _optimizer(value: str) -> tuple[str, dict[str, str] | None]:
    """``"pkg.Name(k=v,k2=v2)"`` -> (name, {k: v}); a name alone -> (name, None)."""
    text = value.strip()
    i = text.find("(")
    if i < 0:
        if not text or len(text) > MAX_STR:
            raise _Bad("not an optimizer name")
        return text, None
    name = text[:i].strip()
    if not name or len(name) > MAX_STR or not text.endswith(")"):
        raise _Bad("not name(args)")
    inner = text[i + 1:-1]
    args: dict[str, str] = {}
    if inner.strip():
        pieces = _top_level_split(inner)
        if len(pieces) > MAX_ITEMS:
            raise _Bad("too many arguments")
        for piece in pieces:
            k, eq, v = piece.partition("=")
            k = k.strip()
            if not eq or not k.isidentifier() or not k.isascii():
                raise _Bad("arguments are not key=value")
            args[k] = _cut(v.strip(), MAX_STR)
    return name, args


def _class_token(folder: str) -> tuple[int | None, str | None]:
    """kohya's DreamBooth folder name ``<repeats>_<class tokens>`` -> (repeats, tokens); (None, None) otherwise.

    sd-scripts splits the folder name at its first "_" and reads the part before as the repeat count.
    """
    head, sep, tail = folder.partition("_")
    if not sep or not (0 < len(head) <= 9 and head.isascii() and head.isdigit()):
        return None, None
    tail = tail.strip()
    return int(head), (tail or None)


def _split_words(text: str) -> list[str]:
    out = []
    for piece in text.split(",")[: MAX_TRIGGERS * 4]:
        word = piece.strip()
        if word:
            out.append(_cut(word, MAX_TAG))
    return out


def _is_conv(layer: LayerRecord) -> bool:
    """A convolution with a kernel larger than 1x1 (the layers that take ``conv_dim``)."""
    return any(int(k) > 1 for k in layer.kernel)


def _kernel_unknown(layer: LayerRecord) -> bool:
    """LoHa/LoKr factors stored 2-D fold the kernel into the input size: linear or conv cannot be told."""
    return not layer.kernel and bool(layer.extra.get("in_includes_kernel"))


def _literal_patterns(patterns: Mapping) -> bool:
    return all(isinstance(k, str) and not (set(k) & _PATTERN_META) for k in patterns)


# ---------------------------------------------------------------------------------------------------------
# the reader


class _Reader:
    """One pass over one file's metadata: fills a Claims and collects the findings (LA312 once per key)."""

    def __init__(self, metadata, layers, adapter_config):
        self.raw: dict[str, str] = {}
        self.had_metadata = metadata is not None
        self.layers = list(layers)
        self.adapter_config_in = adapter_config
        self.bad: dict[str, str] = {}  # key -> LA312 message (one per key)
        self.training: dict[str, Any] = {}
        self.claims = Claims()
        self.triggers: dict[str, TriggerWord] = {}
        self.trigger_order: list[str] = []
        self.args_raw: dict = {}  # ss_network_args as parsed (unbounded key set, for the declared checks)
        self.ss_datasets: list[dict] = []
        self.software_name: str | None = None
        self.ot_config: dict = {}
        self.lora_adapter_configs: list[tuple[str | None, dict]] = []
        self.folder_top: dict[str, tuple[str, int]] = {}  # folder -> (top tag, count), ties in writer order
        if metadata is not None:
            for k, v in metadata.items():
                if not isinstance(k, str):
                    continue
                if isinstance(v, str):
                    self.raw[k] = v
                else:
                    self._malformed(k, v, "not a string")

    # -- helpers -------------------------------------------------------------------------------------------

    def _malformed(self, key: str, value: object, why: str) -> None:
        if key not in self.bad:
            self.bad[key] = f"{_cut(key, MAX_KEY)!r}: value {_show(value)} ignored ({why})"

    def _set(self, name: str, key: str, value: object, kind: str, lo=None, hi=None) -> None:
        """Type ``value`` into ``training[name]`` unless it is unset, already filled, or malformed (LA312)."""
        if _absent(value) or name in self.training:
            return
        try:
            self.training[name] = _typed(value, kind, lo, hi)
        except _Bad as e:
            self._malformed(key, value, str(e))

    def _json(self, key: str, want: type, max_chars: int | None = None):
        """The metadata value at ``key`` parsed as strict, bounded JSON of type ``want``; None when absent or
        malformed (LA312)."""
        text = self.raw.get(key)
        if _absent(text):
            return None
        value, why = parse_json_bounded(text, max_chars=max_chars)
        if why is not None:
            self._malformed(key, text, why)
            return None
        if not isinstance(value, want):
            self._malformed(key, text, f"not a JSON {want.__name__}")
            return None
        return value

    def _trigger(self, word: str, source: str) -> None:
        key = word.casefold()
        entry = self.triggers.get(key)
        if entry is None:
            if len(self.triggers) >= MAX_TRIGGERS:
                return
            entry = TriggerWord(word=word)
            self.triggers[key] = entry
            self.trigger_order.append(key)
        if source not in entry.sources:
            entry.sources.append(source)

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> tuple[Claims, list[Finding]]:
        c = self.claims
        self._modelspec()
        self._ss_fields()
        self._other_trainers()
        from_metadata = bool(self.training)
        self._adapter_config()
        c.trainer, evidence = self._trainer()
        if evidence:
            self.training["trainer_evidence"] = evidence
        self._base_claims()
        self._datasets()
        self._triggers()
        c.training = self.training
        c.triggers = [self.triggers[k] for k in self._trigger_ranking()]
        out: list[Finding] = []
        c.metadata = self._metadata_state(out, from_metadata)
        out.extend(self._declared_checks())
        for key, message in self.bad.items():
            where = key if key.startswith("adapter_config") else "__metadata__." + key
            out.append(findings.make("LA312", message, _cut(where, MAX_KEY)))
        return c, out

    # -- modelspec -----------------------------------------------------------------------------------------

    def _modelspec(self) -> None:
        for k, v in self.raw.items():
            if not k.startswith("modelspec.") or len(self.claims.modelspec) >= MAX_MODELSPEC:
                continue
            name = k[len("modelspec."):]
            if name:
                self.claims.modelspec[_cut(name, MAX_KEY)] = _cut(v, MAX_TEXT)

    # -- ss_* ----------------------------------------------------------------------------------------------

    def _ss_fields(self) -> None:
        raw = self.raw
        for key, name, kind, lo, hi in _SS_FIELDS:
            if key in raw:
                self._set(name, key, raw[key], kind, lo, hi)
        self._dim_alpha("ss_network_dim", "network_dim", "ss_network_alpha", "network_alpha")
        self._text_encoder_lr()
        self._optimizer()
        if "ss_resolution" in raw and not _absent(raw["ss_resolution"]):
            try:
                self.training["resolution"] = _resolution(raw["ss_resolution"])
            except _Bad as e:
                self._malformed("ss_resolution", raw["ss_resolution"], str(e))
        self._times()
        args = self._json("ss_network_args", dict, ARGS_JSON_CHARS)
        if args is not None:
            self.args_raw = args
            self.training["network_args"] = _bounded(args)
            self._set("algo", "ss_network_args.algo", args.get("algo"), "str")
            if isinstance(self.training.get("algo"), str):
                self.training["algo"] = _cut(self.training["algo"].lower(), 64)
            self._set("conv_dim", "ss_network_args.conv_dim", args.get("conv_dim"), "int", 0, 2**31)
            self._set("conv_alpha", "ss_network_args.conv_alpha", args.get("conv_alpha"), "float", 0, MAX_VALUE)
        self._datasets_config()

    def _dim_alpha(self, dim_key: str, dim_name: str, alpha_key: str, alpha_name: str) -> None:
        """``ss_network_dim`` / ``ss_network_alpha``: a number, or "Dynamic" (sd-scripts resize_lora)."""
        for key, name, kind, lo in ((dim_key, dim_name, "int", 1), (alpha_key, alpha_name, "float", 0)):
            value = self.raw.get(key)
            if _absent(value):
                continue
            if value.strip().lower() == "dynamic":
                self.training[name] = "dynamic"
            else:
                self._set(name, key, value, kind, lo, 2**31 if kind == "int" else MAX_VALUE)

    def _text_encoder_lr(self) -> None:
        """``ss_text_encoder_lr``: a float, or ``str(list)`` of one per text encoder (newer sd-scripts)."""
        value = self.raw.get("ss_text_encoder_lr")
        if _absent(value):
            return
        if value.strip().startswith("["):
            lrs = self._json("ss_text_encoder_lr", list, 1024)
            if lrs is None:
                return
            try:
                if not 0 < len(lrs) <= 8:
                    raise _Bad("not 1 to 8 rates")
                self.training["text_encoder_lr"] = [_to_float(x, 0, MAX_VALUE) for x in lrs]
            except _Bad as e:
                self._malformed("ss_text_encoder_lr", value, str(e))
        else:
            self._set("text_encoder_lr", "ss_text_encoder_lr", value, "float", 0, MAX_VALUE)

    def _optimizer(self) -> None:
        value = self.raw.get("ss_optimizer")
        if _absent(value):
            return
        try:
            name, args = _optimizer(value)
        except _Bad as e:
            self._malformed("ss_optimizer", value, str(e))
            return
        self.training["optimizer"] = name
        if args:
            self.training["optimizer_args"] = args

    def _times(self) -> None:
        stamps = {}
        for key, name in (("ss_training_started_at", "training_started_at"),
                          ("ss_training_finished_at", "training_finished_at")):
            value = self.raw.get(key)
            if _absent(value):
                continue
            try:
                self.training[name], stamps[name] = _to_time(value)
            except _Bad as e:
                self._malformed(key, value, str(e))
        if len(stamps) == 2 and stamps["training_finished_at"] >= stamps["training_started_at"]:
            self.training["training_seconds"] = stamps["training_finished_at"] - stamps["training_started_at"]

    def _datasets_config(self) -> None:
        """``ss_datasets`` (sd-scripts dataset-config mode): resolution and batch size when every dataset
        agrees (ss_resolution is not written then)."""
        datasets = self._json("ss_datasets", list)
        if not datasets:
            return
        self.ss_datasets = [d for d in datasets[:MAX_FOLDERS] if isinstance(d, dict)]
        for field_name, name in (("resolution", "resolution"), ("batch_size_per_device", "batch_size")):
            seen = []
            for d in self.ss_datasets:
                v = d.get(field_name)
                try:
                    seen.append(_resolution(str(v)) if name == "resolution" else _to_int(v, 1, MAX_VALUE))
                except _Bad:
                    seen.append(None)
            if seen and seen[0] is not None and all(s == seen[0] for s in seen) and name not in self.training:
                self.training[name] = seen[0]

    # -- other trainers' keys ------------------------------------------------------------------------------

    def _other_trainers(self) -> None:
        info = self._json("training_info", dict)  # ai-toolkit {"step", "epoch"}
        if info is not None:
            self._set("steps", "training_info.step", info.get("step"), "int", 0, MAX_VALUE)
            self._set("epoch", "training_info.epoch", info.get("epoch"), "int", 0, MAX_VALUE)
        # ai-toolkit {"name", "repo", "version"}; other tools write plain text under this generic key
        software = self._json("software", dict) if self.raw.get("software", "").lstrip()[:1] == "{" else None
        if software is not None:
            name = software.get("name")
            self.software_name = _cut(name, MAX_STR) if isinstance(name, str) else None
            self._set("trainer_version", "software.version", software.get("version"), "str")
        ot = self._json("ot_config", dict)  # OneTrainer TrainConfig
        self.ot_config = ot or {}
        if ot is not None:
            for field_name, name, kind, lo, hi in _OT_FIELDS:
                self._set(name, "ot_config." + field_name, ot.get(field_name), kind, lo, hi)
            opt = ot.get("optimizer")
            if isinstance(opt, dict):
                self._set("optimizer", "ot_config.optimizer", opt.get("optimizer"), "str")
            res = ot.get("resolution")
            if isinstance(res, (int, str)) and not isinstance(res, bool) and "resolution" not in self.training:
                try:
                    r = _to_int(res, 1, 2**20)  # OneTrainer also accepts lists of sizes: only a single one types
                    self.training["resolution"] = [r, r]
                except _Bad:
                    pass
        if "ot_revision" in self.raw:
            self._set("trainer_version", "ot_revision", self.raw["ot_revision"], "hex")
        lyco = self._json("lycoris_config", dict)  # LyCORIS wrapper config (SimpleTuner)
        if lyco is not None:
            self._set("algo", "lycoris_config.algo", lyco.get("algo"), "str")
            self._set("network_dim", "lycoris_config.linear_dim", lyco.get("linear_dim"), "int", 1, 2**31)
            self._set("network_alpha", "lycoris_config.linear_alpha", lyco.get("linear_alpha"), "float", 0,
                      MAX_VALUE)
            self._set("conv_dim", "lycoris_config.conv_dim", lyco.get("conv_dim"), "int", 0, 2**31)
            self._set("conv_alpha", "lycoris_config.conv_alpha", lyco.get("conv_alpha"), "float", 0, MAX_VALUE)
        self.lora_adapter_configs = self._lora_adapter_metadata()
        for prefix, cfg in self.lora_adapter_configs:
            self._peft_training(cfg, "lora_adapter_metadata." + (prefix + "." if prefix else ""))

    def _lora_adapter_metadata(self) -> list[tuple[str | None, dict]]:
        """diffusers ``lora_adapter_metadata``: one LoraConfig dict, or ``<component>.<field>`` keys (one
        config per component)."""
        value = self._json("lora_adapter_metadata", dict)
        if value is None:
            return []
        if "r" in value or "lora_alpha" in value or "peft_type" in value:
            return [(None, value)]
        per: dict[str, dict] = {}
        for k, v in value.items():
            if isinstance(k, str) and "." in k:
                prefix, _, name = k.partition(".")
                if prefix not in per and len(per) >= MAX_ITEMS:
                    continue
                per.setdefault(prefix, {})[name] = v
        return sorted(per.items())

    def _peft_training(self, cfg: Mapping, key_prefix: str) -> None:
        """Typed fields of a PEFT config (the first source to fill a key wins)."""
        peft_type = cfg.get("peft_type")
        lora = not isinstance(peft_type, str) or peft_type.upper() == "LORA"
        self._set("peft_type", key_prefix + "peft_type", peft_type, "str")
        self._set("network_dim", key_prefix + "r", cfg.get("r"), "int", 1, 2**31)
        alpha_key = "lora_alpha" if lora else "alpha"
        self._set("network_alpha", key_prefix + alpha_key, cfg.get(alpha_key), "float", 0, MAX_VALUE)
        self._set("use_dora", key_prefix + "use_dora", cfg.get("use_dora"), "bool")
        self._set("use_rslora", key_prefix + "use_rslora", cfg.get("use_rslora"), "bool")

    def _adapter_config(self) -> None:
        cfg = self.adapter_config_in
        if cfg is None:
            return
        if not isinstance(cfg, Mapping):
            self._malformed("adapter_config", cfg, "not a JSON object")
            return
        self.claims.adapter_config = _bounded(dict(cfg))
        self._peft_training(cfg, "adapter_config.")

    # -- trainer -------------------------------------------------------------------------------------------

    def _trainer(self) -> tuple[str | None, list[str]]:
        """The trainer that wrote the file, and the keys that show it (first match in a fixed order: the
        trainers that also write ``ss_*`` keys are tested before kohya)."""
        raw = self.raw

        def ev(key: str) -> str:
            return f"{key}={_cut(raw[key], 80)}"

        if self.software_name == "ai-toolkit":
            return "ai-toolkit", ["software.name=ai-toolkit"]
        ot = [k for k in ("ot_branch", "ot_revision", "ot_config") if k in raw]
        if ot:
            return "onetrainer", [ev(k) if k != "ot_config" else "ot_config" for k in ot]
        ss = [k for k in raw if k.startswith("ss_")]
        if ss:
            module = raw.get("ss_network_module", "").strip()
            version = raw.get("ss_base_model_version", "").strip()
            musubi = []
            if module in _MUSUBI_MODULES:
                musubi.append(ev("ss_network_module"))
            if version in _MUSUBI_ARCHS:
                musubi.append(ev("ss_base_model_version"))
            if "ss_num_train_items" in raw:
                musubi.append("ss_num_train_items")
            if musubi:
                return "musubi-tuner", musubi
            kohya = [ev(k) for k in ("ss_network_module", "ss_sd_scripts_commit_hash") if k in raw]
            impl = raw.get("modelspec.implementation_version", "")
            if impl.startswith("sd-scripts/"):
                kohya.append(ev("modelspec.implementation_version"))
            return "kohya", kohya or [f"{len(ss)} ss_* key(s), e.g. {_cut(ss[0], 80)}"]
        if "lycoris_config" in raw:
            return "lycoris", ["lycoris_config"]
        if "lora_adapter_metadata" in raw:
            return "diffusers", ["lora_adapter_metadata"]
        clone = next((k for k in raw if _is_clone_rank_key(k)), None)
        if clone is not None:
            return "cloneofsimo", [_cut(clone, 80)]
        if isinstance(self.adapter_config_in, Mapping):
            return "peft", ["adapter_config.json"]
        return None, []

    # -- base-model claims ---------------------------------------------------------------------------------

    def _base_claims(self) -> None:
        out = self.claims.base_claims

        def add(source: str, key: str, value: object) -> None:
            if isinstance(value, str) and value.strip() and not _absent(value):
                out.append(Claim(source=source, key=key, value=_cut(value, MAX_STR)))

        for key in ("ss_base_model_version", "ss_base_model", "ss_sd_model_name", "modelspec.architecture"):
            add("metadata", key, self.raw.get(key))
        v2 = self.raw.get("ss_v2")
        if not _absent(v2):
            try:
                if _to_bool(v2):  # "False" names no family: SD1 and SDXL trainings both write it
                    add("metadata", "ss_v2", v2)
            except _Bad as e:
                self._malformed("ss_v2", v2, str(e))
        for name in ("model_type", "base_model_name"):
            add("metadata", "ot_config." + name, self.ot_config.get(name))
        for prefix, cfg in self.lora_adapter_configs:
            key = "lora_adapter_metadata." + (prefix + "." if prefix else "") + "base_model_name_or_path"
            add("metadata", key, cfg.get("base_model_name_or_path"))
        if isinstance(self.adapter_config_in, Mapping):
            add("adapter_config", "base_model_name_or_path", self.adapter_config_in.get("base_model_name_or_path"))

    # -- datasets and tags ---------------------------------------------------------------------------------

    def _datasets(self) -> None:
        dirs = self._json("ss_dataset_dirs", dict) or {}
        freq = self._json("ss_tag_frequency", dict) or {}
        names: list[str] = []
        for name in list(dirs) + list(freq):
            if name not in names and len(names) < MAX_FOLDERS:
                names.append(name)
        all_tags: set[str] = set()
        for name in names:
            folder = DatasetFolder(name=_cut(name, MAX_STR))
            info = dirs.get(name)
            if info is not None:
                if not isinstance(info, dict):
                    self._malformed("ss_dataset_dirs", info, "a folder entry is not an object")
                else:
                    folder.images = self._count("ss_dataset_dirs", info.get("img_count"))
                    folder.repeats = self._count("ss_dataset_dirs", info.get("n_repeats"))
            if folder.repeats is None:
                folder.repeats = _class_token(name)[0]
            tags = freq.get(name)
            if tags is not None:
                if not isinstance(tags, dict):
                    self._malformed("ss_tag_frequency", tags, "a folder entry is not an object")
                else:
                    counted = []
                    for tag, count in tags.items():
                        n = self._count("ss_tag_frequency", count)
                        if n is None or tag == "":
                            continue
                        counted.append((tag, n))
                    folder.distinct_tags = len(counted)
                    all_tags.update(t for t, _ in counted)
                    ranked = sorted(counted, key=lambda tc: (-tc[1], tc[0]))
                    folder.top_tags = [TagCount(tag=_cut(t, MAX_TAG), count=n) for t, n in ranked[:MAX_TOP_TAGS]]
                    if counted:
                        best = max(n for _, n in counted)
                        self.folder_top[name] = (next(t for t, n in counted if n == best), best)
            self.claims.datasets.append(folder)
        self.claims.tags_total = len(all_tags)

    def _count(self, key: str, value: object) -> int | None:
        if value is None:
            return None
        try:
            return _count_int(value)
        except _Bad as e:
            self._malformed(key, value, str(e))
            return None

    # -- trigger words -------------------------------------------------------------------------------------

    def _triggers(self) -> None:
        for word in _split_words(self.raw.get("modelspec.trigger_phrase", "")):
            self._trigger(word, "modelspec.trigger_phrase")
        for word in _split_words(self.raw.get("ssmd_keywords", "")):
            self._trigger(word, "ssmd_keywords")
        names = {f.name for f in self.claims.datasets}
        for folder in self.claims.datasets:
            _, token = _class_token(_dedup_suffix(folder.name, names))
            if token:
                self._trigger(_cut(token, MAX_TAG), "dataset_folder")
            top = self.folder_top.get(folder.name)
            if top is not None and folder.images and top[1] >= TRIGGER_SHARE * folder.images:
                self._trigger(_cut(top[0], MAX_TAG), "ss_tag_frequency")
        for d in self.ss_datasets:
            subsets = d.get("subsets")
            if not isinstance(subsets, list):
                continue
            for s in subsets[:MAX_FOLDERS]:
                if isinstance(s, dict) and s.get("is_reg") is not True and isinstance(s.get("class_tokens"), str):
                    token = s["class_tokens"].strip()
                    if token:
                        self._trigger(_cut(token, MAX_TAG), "ss_datasets.class_tokens")
        for layer in self.layers:
            if layer.kind != "textual-inversion":
                continue
            for name in layer.tensors:
                if name.startswith("bundle_emb."):
                    placeholder = name[len("bundle_emb."):].split(".", 1)[0]
                    if placeholder:
                        self._trigger(_cut(placeholder, MAX_TAG), "bundle_emb")

    def _trigger_ranking(self) -> list[str]:
        order = {k: i for i, k in enumerate(self.trigger_order)}
        return sorted(self.trigger_order, key=lambda k: (-len(self.triggers[k].sources), order[k]))

    # -- metadata state ------------------------------------------------------------------------------------

    def _metadata_state(self, out: list[Finding], from_metadata: bool) -> str:
        """none | stripped | present, for the file's own ``__metadata__`` (an adapter_config.json beside it
        does not count), with LA305 for the first two."""
        if not self.had_metadata or not self.raw and not self.bad:
            why = "the file has no __metadata__" if not self.had_metadata else "__metadata__ is empty"
            out.append(findings.make("LA305", f"no training metadata: {why}", "__metadata__"))
            return "none"
        if from_metadata or self.claims.datasets or self.claims.trainer not in (None, "peft"):
            return "present"
        keys = sorted(self.raw)
        shown = ", ".join(repr(_cut(k, 40)) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5
                                                                   else "")
        out.append(findings.make(
            "LA305", f"training metadata stripped: __metadata__ holds {len(keys)} key(s), none about training "
                     f"({shown})", "__metadata__"))
        return "stripped"

    # -- declared rank / alpha against the layers ----------------------------------------------------------

    def _declared_checks(self) -> list[Finding]:
        out = []
        if "ss_network_dim" in self.raw or "ss_network_alpha" in self.raw:
            out += self._check_kohya()
        cfg = self.adapter_config_in
        if isinstance(cfg, Mapping):
            out += self._check_peft(cfg)
        return out

    def _check_kohya(self) -> list[Finding]:
        """``ss_network_dim`` / ``ss_network_alpha`` (and ``conv_dim`` / ``conv_alpha`` of the network args for
        kernels larger than 1x1) against every layer's stored rank and alpha."""
        args = self.args_raw
        dim = _declared(self.raw.get("ss_network_dim"), int)  # "Dynamic" (resized) declares nothing
        alpha = _declared(self.raw.get("ss_network_alpha"), float)
        conv_dim = _declared(args.get("conv_dim"), int)
        conv_alpha = _declared(args.get("conv_alpha"), float)
        if str(self.training.get("network_module", "")).startswith("lycoris"):
            # lycoris/kohya.py: conv_dim defaults to network_dim, conv_alpha to network_alpha
            conv_dim = dim if "conv_dim" not in args else conv_dim
            conv_alpha = alpha if "conv_alpha" not in args else conv_alpha
        elif conv_dim is not None and "conv_alpha" not in args:
            conv_alpha = 1.0  # sd-scripts networks/lora.py: conv_dim without conv_alpha -> 1.0
        # per-module dims or alphas (block_dims, img_attn_dim, network_reg_dims, a custom LyCORIS preset...)
        # make the global values defaults only: nothing is compared then
        keys = [k for k in args if isinstance(k, str)]
        preset = args.get("preset")
        custom_preset = preset is not None and not (isinstance(preset, str) and preset in _LYCORIS_PRESETS)
        if custom_preset or any(k != "conv_dim" and k.endswith(("_dim", "_dims")) for k in keys):
            dim = conv_dim = None
        if custom_preset or any(k != "conv_alpha" and k.endswith(("_alpha", "_alphas")) for k in keys):
            alpha = conv_alpha = None
        if _truthy(args.get("rs_lora")):
            alpha = conv_alpha = None  # LyCORIS stores alpha rescaled by sqrt(dim) with rs_lora
        split_qkv = _truthy(args.get("split_qkv"))

        def pick(layer: LayerRecord, linear, conv) -> tuple:
            """The declared values that apply to the layer: conv ones for kernels above 1x1, both where a
            folded kernel hides which it is."""
            if _kernel_unknown(layer):
                return tuple(dict.fromkeys(v for v in (linear, conv) if v is not None))
            v = conv if _is_conv(layer) else linear
            return (v,) if v is not None else ()

        def declared_rank(layer: LayerRecord) -> tuple[int | None, tuple[int, ...]]:
            ds = pick(layer, dim, conv_dim)
            if not ds:
                return None, ()
            if split_qkv and _SPLIT_QKV_MODULE.search(layer.module):
                # networks/lora_flux.py split_qkv: saved merged, down [n*r, in] (n = 4 for single-block linear1)
                n = 4 if layer.module.endswith("linear1") else 3
                return ds[0], tuple(ds) + tuple(n * d for d in ds)
            return ds[0], ds

        def declared_alpha(layer: LayerRecord) -> tuple[float, ...]:
            return pick(layer, alpha, conv_alpha)

        has_conv = any(_is_conv(x) or _kernel_unknown(x) for x in self.layers)
        what = _join([f"ss_network_dim {dim}" if dim is not None else None,
                      f"conv_dim {conv_dim}" if has_conv and conv_dim is not None and conv_dim != dim else None])
        what_alpha = _join([f"ss_network_alpha {alpha:g}" if alpha is not None else None,
                            f"conv_alpha {conv_alpha:g}" if has_conv and conv_alpha is not None
                            and conv_alpha != alpha else None])
        return _compare(self.layers, declared_rank, declared_alpha, "the metadata", what, what_alpha)

    def _check_peft(self, cfg: Mapping) -> list[Finding]:
        """PEFT ``r`` / ``lora_alpha`` (LoHa, LoKr: ``alpha``) with ``rank_pattern`` / ``alpha_pattern`` against
        every layer. (A config inside the file, ``lora_adapter_metadata``, is checked by
        audit/adapters/scale.py.)"""
        peft_type = cfg.get("peft_type")
        kind = peft_type.upper() if isinstance(peft_type, str) else "LORA"
        if kind not in ("LORA", "LOHA", "LOKR"):
            return []
        alpha_name = "lora_alpha" if kind == "LORA" else "alpha"
        r = _declared(cfg.get("r"), int)
        a = _declared(cfg.get(alpha_name), float)
        rp = cfg.get("rank_pattern") if isinstance(cfg.get("rank_pattern"), Mapping) else {}
        ap = cfg.get("alpha_pattern") if isinstance(cfg.get("alpha_pattern"), Mapping) else {}
        # PEFT may read pattern keys as regular expressions; only literal keys are resolved (as module-name
        # suffixes, the way audit/adapters/scale.py reads them): with any other key nothing is compared
        check_rank = _literal_patterns(rp)
        check_alpha = _literal_patterns(ap)

        def declared_rank(layer: LayerRecord) -> tuple[int | None, tuple[int, ...]]:
            if not check_rank:
                return None, ()
            d = _declared(match_pattern(rp, layer.module), int)
            d = d if d is not None else r
            return (d, (d,)) if d else (None, ())

        def declared_alpha(layer: LayerRecord) -> tuple[float, ...]:
            if not check_alpha:
                return ()
            x = _declared(match_pattern(ap, layer.module), float)
            x = x if x is not None else a
            return (x,) if x is not None else ()

        what = _join([f"r {r}" if r is not None else None, "rank_pattern" if rp else None])
        what_alpha = _join([f"{alpha_name} {a:g}" if a is not None else None, "alpha_pattern" if ap else None])
        return _compare(self.layers, declared_rank, declared_alpha, "adapter_config.json", what, what_alpha)


def _compare(layers, declared_rank, declared_alpha, source: str, what, what_alpha) -> list[Finding]:
    """One LA211 and/or one LA212 summarising the layers whose stored rank / alpha differ from the declared."""
    rank_seen = rank_bad = alpha_seen = alpha_bad = 0
    rank_example = alpha_example = None
    for layer in layers:
        if layer.kind not in _RANKED_KINDS or layer.rank is None or layer.component == "embedding":
            continue
        d, allowed = declared_rank(layer)
        if d is not None:
            rank_seen += 1
            if layer.rank not in allowed:
                rank_bad += 1
                if rank_example is None:
                    rank_example = (layer.key, layer.rank, d)
        alphas = declared_alpha(layer)
        if not alphas or layer.alpha is None:
            continue
        alpha_seen += 1
        expected: list[float] = []
        for a in alphas:
            # alpha 0 is replaced by the rank when training (sd-scripts, LyCORIS), and so stored
            expected += [a] if a != 0 else [0.0, float(layer.rank), *(float(x) for x in allowed)]
        if not any(math.isclose(layer.alpha, e, rel_tol=ALPHA_REL_TOL, abs_tol=1e-6) for e in expected):
            alpha_bad += 1
            if alpha_example is None:
                alpha_example = (layer.key, layer.alpha, alphas[0])
    out = []
    if rank_bad:
        key, r, d = rank_example
        out.append(findings.make(
            "LA211",
            f"{source} declares {what}, but {rank_bad} of {rank_seen} layer(s) store another rank; "
            f"e.g. {_show(key, 120)} has rank {r} (declared {d})",
            key,
        ))
    if alpha_bad:
        key, x, a = alpha_example
        out.append(findings.make(
            "LA212",
            f"{source} declares {what_alpha}, but {alpha_bad} of {alpha_seen} layer(s) store another alpha; "
            f"e.g. {_show(key, 120)} has alpha {x:g} (declared {a:g})",
            key,
        ))
    return out


def _count_int(value: object) -> int:
    """A count in a JSON dataset entry: a JSON integer (not a bool, a float or text) in [0, MAX_VALUE]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("not an integer count")
    return _to_int(value, 0, MAX_VALUE)


def _declared(value: object, kind: type) -> int | float | None:
    """A declared rank (positive int) or alpha (float >= 0); None when unset, "Dynamic" or malformed (the
    malformed value was already reported when the training parameters were typed)."""
    if _absent(value):
        return None
    try:
        return _to_int(value, 1, 2**31) if kind is int else _to_float(value, 0, MAX_VALUE)
    except _Bad:
        return None


def _join(parts: list[str | None]) -> str:
    return ", ".join(p for p in parts if p)


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def _is_clone_rank_key(key: str) -> bool:
    """cloneofsimo lora_diffusion: ``unet:<index>:rank`` / ``text_encoder:<index>:rank``."""
    parts = key.split(":")
    return (len(parts) == 3 and parts[0] in ("unet", "text_encoder") and parts[2] == "rank"
            and 0 < len(parts[1]) <= 9 and parts[1].isascii() and parts[1].isdigit())


def _dedup_suffix(name: str, names: set[str]) -> str:
    """sd-scripts names a folder used twice ``"<name> (2)"``: the class tokens are those of ``<name>``."""
    if name.endswith(")") and " (" in name:
        base, _, n = name[:-1].rpartition(" (")
        if n.isascii() and n.isdigit() and base in names:
            return base
    return name
