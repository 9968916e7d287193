"""Synthetic LoRA files with the real module names and shapes of SD1.5, SD2.1, SDXL, SD3 medium and FLUX.1,
in every key format lora-audit reads, carrying a planted and exactly known spectrum.

Used by the tests, the benchmarks and ``lora-audit demo``; numpy only (no torch, no diffusers).

    synth = build("sdxl", "kohya", adapter="lora", rank=8, targets="blocks")
    nbytes = write("x.safetensors", synth)
    synth.truth["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"].singular_values

Tensor storage (``Synth.tensors``)
----------------------------------
Values are already rounded to the file dtype. The array's numpy dtype is the storage type:
``F64`` float64, ``F32`` float32, ``F16`` float16, ``BF16`` **uint16 raw bit patterns**, ``F8_E4M3`` /
``F8_E5M2`` **uint8 raw codes**, ``I64`` int64, ``I32`` int32, ``U8`` uint8, ``BOOL`` bool.
``Synth.dtypes`` gives the safetensors dtype of every tensor; :func:`decode` turns any stored array into
float64. Rounding goes float64 -> float32 (round to nearest even) -> target, as a float32 model saved in
half precision by torch would be.

Truth (``Synth.truth``)
-----------------------
Keyed by the module's file-level *stem*: the part of the tensor name before the adapter suffix, e.g.
``lora_unet_down_blocks_0_attentions_0_proj_in`` (kohya), ``unet.down_blocks.0...to_q`` (diffusers-peft),
``unet.<attn>.processor.to_q_lora`` (diffusers-legacy, keys ``<stem>.down.weight``),
``double_blocks.0.processor.qkv_lora1`` (xlabs), ``unet:12`` (cloneofsimo, keys ``unet:12:down``),
``emb_params`` / ``clip_l`` (textual inversion). ``Truth.parts`` maps each canonical role
(``audit.adapters.base.ROLES``) to its exact tensor name. Singular values are those of the exact planted
factors (float64, before dtype rounding), multiplied by the scale, descending, exact zeros omitted.

Spectrum planting
-----------------
LoRA-like kinds: orthonormal U [out, k] and V [in*kh*kw, k] (QR of seeded Gaussians), planted singular
values s (``spectrum(rank)``; default geometric 1.0 ... 0.1 times a per-layer factor in [0.25, 1]);
``up = U diag(sqrt s)``, ``down = diag(sqrt s) V^T``. With rank > min(out, in) only k = min(rank, out, in)
directions are planted and the remaining factor rows/columns are zero. Alpha defaults to rank/2 where the
format stores one, so the scale is not 1. Per kind:

* lora / locon / dora / full / textual inversion: ``spectrum(rank)`` as above (``full``: a dense diff of
  planted rank ``rank``; textual inversion: ``rank`` vectors).
* lora-tucker (3x3 convs): ``down`` with orthonormal rows, the core ``mid`` flattened to [r, r*kh*kw] equal to
  diag(sqrt s) times orthonormal rows, ``up = U diag(sqrt s)``: the product again has singular values s.
* lokr: ``w1`` full with singular values linspace(1, 0.5); ``w2`` low-rank with ``spectrum(rank)`` (or full
  with ``spectrum(min(w2 shape))``); truth = all products (Kronecker).
* loha: the four factors are seeded Gaussians (no planting); the truth is computed exactly from the
  face-splitting factorisation dW = A B^T, A[o, (i,j)] = w1a[o,i] w2a[o,j], B[x, (i,j)] = w1b[i,x] w2b[j,x]
  (QR of A and B, SVD of the r^2 x r^2 core), never from a dense dW.
* glora: ``b1 @ b2`` planted with ``spectrum(rank)``, ``a1 @ a2`` with 0.1 x that.
* oft / boft: skew generators P J(theta) P^T with known angles, stored as their strict upper triangle (so
  B - B^T is the generator); OFT truth sigma(R - I) = 2 theta / sqrt(1 + theta^2) (each twice); BOFT truth
  from the dense product of the butterfly stages (layers up to 1024 rows, else None).
* ia3: N(0, 0.1 f) increments; norm: N(0, 0.01) vectors.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, BinaryIO

import numpy as np

from audit import archs
from audit.formats import FORMAT_IDS

# ---------------------------------------------------------------------------------------------------------
# identifiers

FAMILIES = archs.FAMILIES
FORMATS = tuple(f for f in FORMAT_IDS if f != "unknown")  # every key format the reader recognises
ADAPTERS = (
    "lora",
    "locon",
    "lora-tucker",
    "loha",
    "loha-tucker",
    "lokr",
    "lokr-full",
    "dora",
    "ia3",
    "oft",
    "boft",
    "glora",
    "full",
    "norm",
)
TARGETS = archs.TARGETS

# The adapter kind (DESIGN.md identifiers) each generator adapter produces.
KIND_OF = {
    "lora": "lora",
    "locon": "locon",
    "lora-tucker": "lora-tucker",
    "loha": "loha",
    "loha-tucker": "loha",
    "lokr": "lokr",
    "lokr-full": "lokr",
    "dora": "dora",
    "ia3": "ia3",
    "oft": "oft",
    "boft": "boft",
    "glora": "glora",
    "full": "full",
    "norm": "norm",
}

# ---------------------------------------------------------------------------------------------------------
# dtypes: storage types, encoding and decoding

_STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
DTYPES = tuple(_STORAGE)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def _f8_values(fmt: str) -> np.ndarray:
    """float64 value of each of the 256 codes (NaN for NaN codes, +-inf for E5M2 infinities)."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    if fmt == "F8_E4M3":  # e4m3fn: bias 7, no infinities, S.1111.111 is NaN
        e, m = (codes >> 3) & 0xF, (codes & 7).astype(np.float64)
        val = np.where(e == 0, m / 8.0 * 2.0**-6, (1.0 + m / 8.0) * np.exp2(e.astype(np.float64) - 7))
        val = np.where((e == 15) & (m == 7), np.nan, val)
    else:  # e5m2: bias 15, IEEE-like
        e, m = (codes >> 2) & 0x1F, (codes & 3).astype(np.float64)
        val = np.where(e == 0, m / 4.0 * 2.0**-14, (1.0 + m / 4.0) * np.exp2(e.astype(np.float64) - 15))
        val = np.where(e == 31, np.where(m == 0, np.inf, np.nan), val)
    return sign * val


_F8_TABLE = {k: _f8_values(k) for k in ("F8_E4M3", "F8_E5M2")}


def _encode_f8(x32: np.ndarray, fmt: str) -> np.ndarray:
    """float32 -> fp8 codes, round to nearest even; E4M3 saturates to +-448 (NaN stays NaN), E5M2 overflows
    to +-inf. This is torch's ``.to(torch.float8_e4m3fn / float8_e5m2)``."""
    table = _F8_TABLE[fmt]
    a = np.abs(x32.astype(np.float64))
    if fmt == "F8_E4M3":
        top = 0x7E  # 448
        pos = table[: top + 1]
    else:
        top = 0x7C  # +inf; as a rounding target it stands at 2**16, where the next binade would start
        pos = table[: top + 1].copy()
        pos[top] = 65536.0
    finite = np.isfinite(a)
    af = np.where(finite, a, 0.0)
    hi = np.clip(np.searchsorted(pos, af, side="left"), 0, top)
    lo = np.clip(hi - 1, 0, top)
    d_lo = af - pos[lo]
    d_hi = pos[hi] - af
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo)
    code = np.where(af >= pos[top], top, code)
    if fmt == "F8_E4M3":
        code = np.where(np.isinf(a), top, code)
    else:
        code = np.where(np.isinf(a), 0x7C, code)
    code = np.where(np.signbit(x32), code | 0x80, code)
    code = np.where(np.isnan(a), 0x7F, code)
    return code.astype(np.uint8)


def _encode_bf16(x32: np.ndarray) -> np.ndarray:
    bits = np.asarray(x32, dtype=np.float32).copy(order="C").view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x32)
    if nan.any():
        rounded = np.where(nan, ((bits >> 16) & 0x8000).astype(np.uint16) | 0x7FC0, rounded).astype(np.uint16)
    return rounded


def encode(values: Any, dtype: str) -> np.ndarray:
    """Round ``values`` to ``dtype`` and return the storage array (see the module docstring).

    A uint16 array given for ``BF16`` (uint8 for ``F8_*``) is taken as raw bits and returned unchanged.
    Integer and bool dtypes require values that fit exactly.
    """
    if dtype not in _STORAGE:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {DTYPES}")
    arr = np.asarray(values)
    storage = _STORAGE[dtype]
    if dtype == "BF16" and arr.dtype == np.uint16:
        return arr.astype(storage, copy=False)
    if dtype in ("F8_E4M3", "F8_E5M2") and arr.dtype == np.uint8:
        return arr.astype(storage, copy=False)
    if dtype in ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"cannot encode {arr.dtype} values as {dtype}")
        if dtype == "F64":
            return arr.astype(storage)
        x32 = arr.astype(np.float32)
        if dtype == "F32":
            return x32.astype(storage, copy=False)
        if dtype == "F16":
            with np.errstate(over="ignore"):
                return x32.astype(storage)
        if dtype == "BF16":
            return _encode_bf16(x32)
        return _encode_f8(x32, dtype)
    # integers and bool
    if dtype == "BOOL":
        if arr.dtype != bool and not np.all((arr == 0) | (arr == 1)):
            raise ValueError("BOOL values must be 0/1 or bool")
        return arr.astype(storage)
    out = arr.astype(storage)
    if not np.array_equal(out.astype(np.float64), arr.astype(np.float64)):
        raise ValueError(f"values do not fit {dtype}")
    return out


def decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    """A stored array (as in ``Synth.tensors``) -> float64 values."""
    arr = np.asarray(stored)
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return _F8_TABLE[dtype][arr.astype(np.intp)]
    if dtype not in _STORAGE:
        raise ValueError(f"unsupported dtype {dtype!r}")
    return arr.astype(np.float64)


def round_to(values: Any, dtype: str) -> np.ndarray:
    """float64 values after a round trip through ``dtype``."""
    return decode(encode(values, dtype), dtype)


def _infer_dtype(arr: np.ndarray) -> str:
    for name, st in (("F64", "f8"), ("F32", "f4"), ("F16", "f2"), ("I64", "i8"), ("I32", "i4"), ("U8", "u1")):
        if arr.dtype == np.dtype(st):
            return name
    if arr.dtype == bool:
        return "BOOL"
    raise ValueError(f"cannot infer a safetensors dtype for numpy {arr.dtype}; pass dtypes=")


# ---------------------------------------------------------------------------------------------------------
# safetensors writer


def _prepare(tensors: Mapping[str, Any], dtypes: Mapping[str, str] | None, canonical: bool):
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        arr = np.asarray(value)
        dt = (dtypes or {}).get(name) or _infer_dtype(arr)
        stored = encode(arr, dt)
        if not stored.flags.c_contiguous:
            stored = stored.copy(order="C")
        entries.append((name, dt, list(stored.shape), stored))
    if canonical:
        # like the reference implementation: larger items first (keeps every tensor aligned), then by name
        entries.sort(key=lambda e: (-_STORAGE[e[1]].itemsize, e[0]))
    return entries


def _header(entries, metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        md = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("safetensors metadata keys and values must be strings")
            md[k] = v
        header["__metadata__"] = md
    offset = 0
    for name, dt, shape, stored in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + stored.nbytes]}
        offset += stored.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _write_to(fh: BinaryIO, entries, metadata) -> int:
    hb = _header(entries, metadata)
    fh.write(struct.pack("<Q", len(hb)))
    fh.write(hb)
    total = 8 + len(hb)
    for _, _, _, stored in entries:
        if stored.nbytes:
            fh.write(memoryview(stored.reshape(-1)).cast("B"))
        total += stored.nbytes
    return total


def serialize(
    tensors: Mapping[str, Any],
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    canonical: bool = True,
) -> bytes:
    """The bytes :func:`write_safetensors` would write."""
    buf = io.BytesIO()
    _write_to(buf, _prepare(tensors, dtypes, canonical), metadata)
    return buf.getvalue()


def write_safetensors(
    path: str | PathLike[str],
    tensors: Mapping[str, Any],
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    canonical: bool = True,
) -> int:
    """Write a safetensors file; return the number of bytes written.

    Layout: 8-byte little-endian header length, UTF-8 JSON header (``__metadata__`` first) padded with
    spaces to a multiple of 8, then the tensors' little-endian data, contiguous. ``dtypes`` maps names to
    safetensors dtypes (F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 U8 BOOL); without an entry the dtype is
    inferred from the numpy dtype. Float values are rounded as :func:`encode` does; raw bit arrays
    (uint16 for BF16, uint8 for F8) are written as they are. ``canonical`` orders the tensors by item size
    (largest first) then name; ``canonical=False`` keeps the mapping's order (data may then be unaligned).
    """
    entries = _prepare(tensors, dtypes, canonical)
    with open(path, "wb") as fh:
        return _write_to(fh, entries, metadata)


# ---------------------------------------------------------------------------------------------------------
# LyCORIS factorisations


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into (m, n), m <= n, m * n = dimension, as LyCORIS LoKr does.

    A positive ``factor`` that divides ``dimension`` gives (min(factor, d/factor), max(...)). Otherwise
    (``factor`` <= 0 means no limit) the divisor pair with the smallest sum whose smaller-side candidate
    does not exceed ``factor`` is taken: walking the divisors m = 1, 2, ... upwards, stop before the sum
    m + d/m grows or m passes ``factor``.
    """
    if dimension < 1:
        raise ValueError("dimension must be positive")
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (m, n) if m <= n else (n, m)
    limit = dimension if factor <= 0 else factor
    m, n = 1, dimension
    while m < n:
        cand = m + 1
        while dimension % cand:
            cand += 1
        other = dimension // cand
        if cand + other > m + n or cand > limit:
            break
        m, n = cand, other
    return (m, n) if m <= n else (n, m)


def power2factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(block_size, block_num) for BOFT: block_num a power of two, block_size the largest even divisor
    <= ``factor`` (<= 0: no limit) with dimension / block_size a power of two. ValueError if none exists."""
    limit = dimension if factor <= 0 else factor
    best = 0
    for m in range(2, min(limit, dimension) + 1, 2):
        if dimension % m == 0:
            q = dimension // m
            if q & (q - 1) == 0:
                best = q
    if best == 0:
        raise ValueError(f"no butterfly factorisation of {dimension} with block size <= {factor}")
    return dimension // best, best


# ---------------------------------------------------------------------------------------------------------
# public data


@dataclass
class Truth:
    """What the generator planted in one module (see the module docstring for the key)."""

    kind: str  # adapter kind (DESIGN.md): lora, locon, lora-tucker, loha, lokr, dora, ia3, ..., textual-inversion
    component: str  # model role: unet | transformer | te | te1 | te2 | te3 | embedding
    module: str  # module path (dots) in the naming the file uses; tensor name for textual inversion
    naming: str  # diffusers | sgm | bfl | hf-clip | hf-t5 | "" (textual inversion)
    out_features: int
    in_features: int  # conv: input channels (kernel separate)
    kernel: tuple[int, int] | None
    rank: int | None  # inner dimension as the trainer defines it
    alpha: float | None  # stored 0-d value (after dtype rounding), or the metadata/config value; None if none
    scale: float  # effective multiplier at strength 1 (alpha/rank, 1, ...)
    singular_values: np.ndarray | None  # sigma(scale * dW) of the planted factors; see delta_basis
    # as audit.adapters.base.LayerAnalysis: exact | direction (DoRA: the un-normalised direction update) |
    # relative (OFT/BOFT: dW = (R - I) W) | exact-partial (GLoRA: singular_values is the base-independent
    # b-term only) | none (IA3, set_weight). Norm tuning (w_norm/b_norm) is exact but has no spectrum.
    delta_basis: str
    relative_singular_values: np.ndarray | None = None  # OFT/BOFT sigma(R - I); GLoRA sigma(scale*a1@a2);
    #   IA3 |multiplier - identity| (sorted); None elsewhere
    parts: dict[str, str] = field(default_factory=dict)  # canonical role -> tensor name
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific facts (block sizes, factor shapes)


@dataclass
class Synth:
    tensors: dict[str, np.ndarray]  # storage arrays, values rounded to the file dtype (module docstring)
    dtypes: dict[str, str]  # safetensors dtype per tensor
    metadata: dict[str, str]  # the file's __metadata__
    truth: dict[str, Truth]  # per module stem (module docstring)
    family: str = ""
    fmt: str = ""
    adapter: str = ""
    adapter_config: dict[str, Any] | None = None  # PEFT adapter_config.json content (fmt "peft" only)

    def array(self, name: str) -> np.ndarray:
        """A tensor decoded to float64."""
        return decode(self.tensors[name], self.dtypes[name])


# ---------------------------------------------------------------------------------------------------------
# format table


@dataclass(frozen=True)
class _FormatSpec:
    families: tuple[str, ...]
    adapters: tuple[str, ...]
    style: str  # suffix spelling: lyco | peft | legacy | clone | ti
    alpha: str  # tensor | metadata | config | none
    targets: tuple[str, ...] = TARGETS


_ALL_FAMILIES = archs.FAMILIES
_LYCO = ADAPTERS
_FORMATS = {
    "kohya": _FormatSpec(_ALL_FAMILIES, _LYCO, "lyco", "tensor"),
    "onetrainer": _FormatSpec(_ALL_FAMILIES, ("lora", "locon", "dora", "loha"), "lyco", "tensor"),
    "comfy-native": _FormatSpec(_ALL_FAMILIES, _LYCO, "lyco", "tensor"),
    "simpletuner-lycoris": _FormatSpec(
        _ALL_FAMILIES, _LYCO, "lyco", "tensor", ("attn", "blocks", "all", "all-linear", "everything")
    ),
    "diffusers-peft": _FormatSpec(_ALL_FAMILIES, ("lora", "dora"), "peft", "metadata"),
    "peft": _FormatSpec(
        _ALL_FAMILIES,
        ("lora", "dora", "loha", "lokr", "ia3"),
        "peft",
        "config",
        ("attn", "blocks", "all", "all-linear", "everything"),
    ),
    "ai-toolkit": _FormatSpec(("flux1",), ("lora",), "peft", "none", ("attn", "blocks", "all", "all-linear")),
    "bfl-control": _FormatSpec(("flux1",), ("lora",), "peft", "none", ("attn", "blocks", "all", "all-linear")),
    "xlabs": _FormatSpec(("flux1",), ("lora",), "legacy", "none", ("attn",)),
    "diffusers-legacy": _FormatSpec(("sd1", "sd2", "sdxl"), ("lora",), "legacy", "none", ("attn", "te-only")),
    "cloneofsimo": _FormatSpec(("sd1",), ("lora",), "clone", "none", ("attn", "blocks", "te-only")),
    "textual-inversion": _FormatSpec(("sd1", "sd2", "sdxl"), ("lora", "textual-inversion"), "ti", "none"),
}

# LoHa / LoKr roles whose tensors are named ``<stem>.<role>`` in both the LyCORIS and the PEFT spelling
_VERBATIM_ROLES = (
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
)
_SUFFIX_VERBATIM = {r: "." + r for r in _VERBATIM_ROLES}
_SUFFIX_LYCO = {
    "lora_down": ".lora_down.weight",
    "lora_up": ".lora_up.weight",
    "lora_mid": ".lora_mid.weight",
    "alpha": ".alpha",
    "dora_scale": ".dora_scale",
    "weight": ".weight",
    "on_input": ".on_input",
    "oft_blocks": ".oft_blocks",
    "rescale": ".rescale",
    "a1": ".a1.weight",
    "a2": ".a2.weight",
    "b1": ".b1.weight",
    "b2": ".b2.weight",
    "bm": ".bm.weight",
    "diff": ".diff",
    "diff_b": ".diff_b",
    "w_norm": ".w_norm",
    "b_norm": ".b_norm",
    **_SUFFIX_VERBATIM,
}
_SUFFIX_PEFT = {
    "lora_down": ".lora_A.weight",
    "lora_up": ".lora_B.weight",
    "lora_up_bias": ".lora_B.bias",
    "dora_scale": ".lora_magnitude_vector",
    "weight": ".ia3_l",
    "set_weight": ".scale",
    **_SUFFIX_VERBATIM,
}
_SUFFIX = {
    "lyco": _SUFFIX_LYCO,
    "peft": _SUFFIX_PEFT,
    "legacy": {"lora_down": ".down.weight", "lora_up": ".up.weight"},
    "clone": {"lora_down": ":down", "lora_up": ":up"},
    "ti": {"embedding": ""},
}

_KOHYA_TE_PREFIX = {"te": "lora_te_", "te1": "lora_te1_", "te2": "lora_te2_", "te3": "lora_te3_"}
_COMFY_TE = {"clip-l": "clip_l", "clip-h": "clip_h", "clip-g": "clip_g", "t5-xxl": "t5xxl"}
_DIFFUSERS_COMPONENT = {
    "unet": "unet.",
    "transformer": "transformer.",
    "te": "text_encoder.",
    "te1": "text_encoder.",
    "te2": "text_encoder_2.",
}


def _denoiser_naming(fmt: str, family: str) -> str:
    if fmt == "kohya":
        return "diffusers" if family in ("sd1", "sd2") else archs.native_naming(family)
    if fmt in ("comfy-native", "ai-toolkit", "bfl-control", "xlabs"):
        return archs.native_naming(family)
    return "diffusers"


def _supported_tes(fmt: str, family: str) -> tuple[str, ...]:
    tes = archs.text_encoder_components(family)
    if fmt in ("kohya", "onetrainer", "comfy-native", "diffusers-legacy", "cloneofsimo"):
        return tes
    if fmt == "diffusers-peft":
        # diffusers LoRA loaders handle the CLIP encoders only (no T5)
        return tuple(c for c in tes if c != "te3")
    return ()


def _stem(fmt: str, family: str, comp: str, path: str, index: int) -> str:
    flat = path.replace(".", "_")
    den = comp in ("unet", "transformer")
    if fmt == "kohya":
        return ("lora_unet_" if den else _KOHYA_TE_PREFIX[comp]) + flat
    if fmt == "onetrainer":
        if den:
            return ("lora_unet_" if comp == "unet" else "lora_transformer_") + flat
        if family == "flux1" and comp == "te3":
            return "lora_te2_" + flat  # OneTrainer numbers FLUX's T5 as the second encoder
        return _KOHYA_TE_PREFIX[comp] + flat
    if fmt == "simpletuner-lycoris":
        return "lycoris_" + flat
    if fmt == "comfy-native":
        if den:
            return "diffusion_model." + path
        return f"text_encoders.{_COMFY_TE[archs.te_model(family, comp)]}.transformer.{path}"
    if fmt == "diffusers-peft":
        return _DIFFUSERS_COMPONENT[comp] + path
    if fmt == "peft":
        return "base_model.model." + path
    if fmt == "ai-toolkit":
        return "diffusion_model." + path
    if fmt == "bfl-control":
        return path
    if fmt == "diffusers-legacy":
        if den:
            # ...transformer_blocks.0.attn1.to_out.0 -> unet....attn1.processor.to_out_lora
            parts = path.split(".")
            i = max(j for j, p in enumerate(parts) if p in ("attn1", "attn2"))
            return f"unet.{'.'.join(parts[: i + 1])}.processor.{parts[i + 1]}_lora"
        return _DIFFUSERS_COMPONENT[comp] + path + ".lora_linear_layer"
    if fmt == "xlabs":
        # double_blocks.{i}.{img|txt}_attn.{qkv|proj}
        parts = path.split(".")
        stream = "1" if parts[2].startswith("img") else "2"
        return f"double_blocks.{parts[1]}.processor.{parts[3]}_lora{stream}"
    if fmt == "cloneofsimo":
        return f"{'unet' if den else 'text_encoder'}:{index}"
    raise AssertionError(fmt)


# ---------------------------------------------------------------------------------------------------------
# random planting helpers


def _rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(label.encode("utf-8"))]))


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """[rows, cols] with orthonormal columns (cols <= rows), sign-normalised QR of a Gaussian."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    return q * d


def default_spectrum(r: int) -> np.ndarray:
    """Geometric 1.0 ... 0.1 over r values (1.0 for r = 1)."""
    return np.geomspace(1.0, 0.1, r) if r > 1 else np.ones(1)


def _check_spectrum(s: Any, r: int) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    if s.shape != (r,) or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"spectrum({r}) must return {r} finite non-negative values")
    return s


def _desc(values: np.ndarray, tol: float = 0.0) -> np.ndarray:
    v = np.sort(np.abs(np.asarray(values, dtype=np.float64)).reshape(-1))[::-1]
    if v.size == 0:
        return v
    if tol > 0:
        return v[v > tol * v[0]]
    return v[v > 0]


def _r_factor(a: np.ndarray) -> np.ndarray:
    """R of a thin QR of a tall matrix: Cholesky of the Gram matrix (well-conditioned inputs), else QR."""
    if a.shape[0] >= a.shape[1]:
        try:
            return np.linalg.cholesky(a.T @ a).T
        except np.linalg.LinAlgError:
            pass
    return np.linalg.qr(a, mode="r")


def _svals_lowrank(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Singular values of a @ b.T for tall a [m, k], b [n, k] (float64)."""
    ra = _r_factor(a)
    rb = _r_factor(b)
    return np.linalg.svd(ra @ rb.T, compute_uv=False)


class _Plan:
    """Per-build settings shared by the module generators."""

    def __init__(self, *, fmt, family, adapter, rank, alpha, dtype, spectrum, seed, factor, decompose_both):
        self.fmt = fmt
        self.family = family
        self.adapter = adapter
        self.rank = rank
        self.alpha = alpha
        self.dtype = dtype
        self.spectrum = spectrum
        self.seed = seed
        self.factor = factor
        self.decompose_both = decompose_both
        self.spec = _FORMATS[fmt]

    def planted(self, rng: np.random.Generator, r: int) -> np.ndarray:
        if self.spectrum is None:
            return default_spectrum(r) * (0.25 + 0.75 * rng.random())
        return _check_spectrum(self.spectrum(r), r)

    def alpha_value(self, kind_default: float) -> tuple[float | None, float | None]:
        """(value stored in the file or declared, value used for the scale)."""
        conv = self.spec.alpha
        if conv == "none":
            return None, None
        a = float(self.alpha) if self.alpha is not None else kind_default
        if conv == "tensor":
            stored = float(round_to(np.float64(a), self.dtype))
            return stored, stored
        return a, a

    def rank_alpha(self, r: int) -> tuple[float | None, float]:
        """(alpha stored or declared, scale alpha / r) of a rank-``r`` LoRA-like layer: alpha defaults to r / 2,
        to r where a config file declares it; the scale is 1 where the format has no alpha."""
        stored, used = self.alpha_value(r / 2)
        if self.spec.alpha == "config":
            stored, used = self.alpha_value(float(r))
        return stored, (used / r if used is not None else 1.0)

    def store_alpha(self, parts: dict, stored: float | None) -> None:
        """Adds the 0-d ``alpha`` tensor where the format keeps alpha in the file."""
        if stored is not None and self.spec.alpha == "tensor":
            parts["alpha"] = np.float64(stored)


def _lowrank_factors(rng, m: int, n: int, r: int, s: np.ndarray):
    """up [m, r], down [r, n] with up @ down = U diag(s[:k]) V^T, k = min(r, m, n)."""
    k = min(r, m, n)
    u = _orthonormal(rng, m, k)
    v = _orthonormal(rng, n, k)
    root = np.sqrt(s[:k])
    up = np.zeros((m, r))
    down = np.zeros((r, n))
    up[:, :k] = u * root
    down[:k] = root[:, None] * v.T
    return up, down, s[:k]


def _skew_blocks(rng, count: int, b: int, theta_scale: float):
    """``count`` skew-symmetric b x b blocks P diag([[0, t], [-t, 0]]...) P^T and their rotation angles."""
    p, _ = np.linalg.qr(rng.standard_normal((count, b, b)))  # batched: orthogonal P per block
    thetas = theta_scale * rng.uniform(0.05, 0.3, size=(count, b // 2))
    j = np.zeros((count, b, b))
    idx = np.arange(b // 2)
    j[:, 2 * idx, 2 * idx + 1] = thetas
    j[:, 2 * idx + 1, 2 * idx] = -thetas
    blocks = p @ j @ np.swapaxes(p, 1, 2)
    return blocks, thetas


def _cayley(q: np.ndarray) -> np.ndarray:
    eye = np.eye(q.shape[-1])
    return (eye + q) @ np.linalg.inv(eye - q)


def boft_rotation(rotations: np.ndarray) -> np.ndarray:
    """Dense [out, out] matrix M of a BOFT adapter (W' = M @ W) from its per-stage block rotations
    ``rotations`` [m, block_num, b, b] (already Cayley-transformed): the butterfly stages as ComfyUI
    applies them to the rows of W."""
    m, num, b, _ = rotations.shape
    out = num * b
    cur = np.eye(out)
    half = b // 2
    for i in range(m):
        k = 2**i * half
        cur = cur.reshape(-1, 2, k, out).transpose(0, 2, 1, 3).reshape(num, b, out)
        cur = np.einsum("bij,bjx->bix", rotations[i], cur)
        cur = cur.reshape(-1, k, 2, out).transpose(0, 2, 1, 3).reshape(out, out)
    return cur


_BOFT_DENSE_LIMIT = 1024  # BOFT truth needs the dense out x out rotation


# ---------------------------------------------------------------------------------------------------------
# module generators: each returns (parts: role -> float64 array | int array, truth fields)


def _gen_lora(plan: _Plan, rng, mod: archs.Module, tucker: bool, dora: bool):
    r = plan.rank
    m, n = mod.out_features, mod.fan_in
    s_all = plan.planted(rng, r)
    parts: dict[str, np.ndarray] = {}
    conv = mod.kernel is not None
    if tucker and conv and mod.kernel != (1, 1):
        kh, kw = mod.kernel
        cin = mod.in_features
        k = min(r, m, cin)
        s = s_all[:k]
        u = _orthonormal(rng, m, k)
        d = _orthonormal(rng, cin, k).T  # [k, in] orthonormal rows
        q = _orthonormal(rng, k * kh * kw, k).T  # [k, k*kh*kw] orthonormal rows
        root = np.sqrt(s)
        up = np.zeros((m, r, 1, 1))
        up[:, :k, 0, 0] = u * root
        down = np.zeros((r, cin, 1, 1))
        down[:k, :, 0, 0] = d
        mid = np.zeros((r, r, kh, kw))
        mid[:k, :k] = (root[:, None] * q).reshape(k, k, kh, kw)
        parts.update(lora_down=down, lora_up=up, lora_mid=mid)
    else:
        up, down, s = _lowrank_factors(rng, m, n, r, s_all)
        if conv:
            up = up.reshape(m, r, 1, 1)
            down = down.reshape(r, mod.in_features, *mod.kernel)
        parts.update(lora_down=down, lora_up=up)
    if dora:
        mag = rng.uniform(0.5, 1.5, size=m if plan.fmt != "onetrainer" else mod.in_features)
        extra_dims = (1, 1) if conv else ()
        if plan.spec.style == "peft":
            parts["dora_scale"] = mag.reshape(1, m, 1, 1) if conv else mag
        elif plan.fmt == "onetrainer":
            parts["dora_scale"] = mag.reshape(1, mod.in_features, *extra_dims)
        else:
            parts["dora_scale"] = mag.reshape(m, 1, *extra_dims)
    stored, scale = plan.rank_alpha(r)
    plan.store_alpha(parts, stored)
    return parts, dict(
        rank=r,
        alpha=stored,
        scale=scale,
        singular_values=abs(scale) * _desc(s),
        delta_basis="direction" if dora else "exact",
    )


def _gen_loha(plan: _Plan, rng, mod: archs.Module, tucker: bool):
    r = plan.rank
    m = mod.out_features
    f = 0.25 + 0.75 * rng.random()
    conv = mod.kernel is not None
    n = mod.fan_in
    sigma = (f / (r * math.sqrt(m * n))) ** 0.25
    parts: dict[str, np.ndarray] = {}
    cols = []
    for i in (1, 2):
        if tucker and conv and mod.kernel != (1, 1):
            kh, kw = mod.kernel
            t = rng.standard_normal((r, r, kh, kw)) * sigma
            wa = rng.standard_normal((r, m)) * sigma
            wb = rng.standard_normal((r, mod.in_features)) * sigma
            parts[f"hada_t{i}"], parts[f"hada_w{i}_a"], parts[f"hada_w{i}_b"] = t, wa, wb
            # factor_i = wa^T @ C, C[p, (c, h, w)] = sum_j t[p, j, h, w] wb[j, c]
            c = np.einsum("pjhw,jc->pchw", t, wb).reshape(r, n)
            cols.append((wa.T, c))
        else:
            wa = rng.standard_normal((m, r)) * sigma
            wb = rng.standard_normal((r, n)) * sigma
            parts[f"hada_w{i}_a"], parts[f"hada_w{i}_b"] = wa, wb
            cols.append((wa, wb))
    (a1, b1), (a2, b2) = cols
    # dW = (a1 b1) * (a2 b2) = A B^T with A[o, (i,j)] = a1[o,i] a2[o,j], B[x, (i,j)] = b1[i,x] b2[j,x]
    big_a = (a1[:, :, None] * a2[:, None, :]).reshape(m, r * r)
    big_b = (b1.T[:, :, None] * b2.T[:, None, :]).reshape(n, r * r)
    s = _svals_lowrank(big_a, big_b)
    stored, scale = plan.rank_alpha(r)
    plan.store_alpha(parts, stored)
    return parts, dict(
        rank=r, alpha=stored, scale=scale, singular_values=abs(scale) * _desc(s, 1e-12), delta_basis="exact"
    )


def _gen_lokr(plan: _Plan, rng, mod: archs.Module, full: bool):
    r = plan.rank
    out_l, out_k = factorization(mod.out_features, plan.factor)
    in_m, in_n = factorization(mod.in_features, plan.factor)
    kk = 1 if mod.kernel is None else mod.kernel[0] * mod.kernel[1]
    parts: dict[str, np.ndarray] = {}
    use_w1 = full or not (plan.decompose_both and r < max(out_l, in_m) / 2)
    use_w2 = full or r >= max(out_k, in_n) / 2
    if use_w1:
        p1 = min(out_l, in_m)
        s1 = np.linspace(1.0, 0.5, p1)
        w1 = _orthonormal(rng, out_l, p1) * s1 @ _orthonormal(rng, in_m, p1).T
        parts["lokr_w1"] = w1
    else:
        w1a, w1b, s1 = _lowrank_factors(rng, out_l, in_m, r, np.linspace(1.0, 0.5, r))
        parts["lokr_w1_a"], parts["lokr_w1_b"] = w1a, w1b
    cols2 = in_n * kk
    if use_w2:
        p2 = min(out_k, cols2)
        s2 = plan.planted(rng, p2)
        w2 = _orthonormal(rng, out_k, p2) * s2 @ _orthonormal(rng, cols2, p2).T
        parts["lokr_w2"] = w2 if mod.kernel is None else w2.reshape(out_k, in_n, *mod.kernel)
    else:
        w2a, w2b, s2 = _lowrank_factors(rng, out_k, cols2, r, plan.planted(rng, r))
        parts["lokr_w2_a"], parts["lokr_w2_b"] = w2a, w2b
    if use_w1 and use_w2:
        # LyCORIS stores alpha = lora_dim when no factor is decomposed; every loader then uses scale 1
        stored = float(r) if plan.spec.alpha == "tensor" else None
        scale = 1.0
    else:
        stored, scale = plan.rank_alpha(r)
    plan.store_alpha(parts, stored)
    sv = abs(scale) * _desc(np.outer(s1, s2))
    return parts, dict(
        rank=r,
        alpha=stored,
        scale=scale,
        singular_values=sv,
        delta_basis="exact",
        extra={"factors": [[out_l, in_m], [out_k, in_n]], "w1_full": use_w1, "w2_full": use_w2},
    )


def _gen_ia3(plan: _Plan, rng, mod: archs.Module):
    m = mod.out_features
    f = 0.25 + 0.75 * rng.random()
    delta = rng.normal(0.0, 0.1 * f, size=m)
    conv = mod.kernel is not None
    parts: dict[str, np.ndarray] = {}
    if plan.spec.style == "peft":  # PEFT stores the multiplier itself (initialised to ones)
        vec = 1.0 + delta
        delta = vec - 1.0  # what a reader recovers from the stored multiplier
        parts["weight"] = vec.reshape(1, m, 1, 1) if conv else vec.reshape(m, 1)
    else:  # LyCORIS stores the increment (W' = W * (1 + w))
        parts["weight"] = delta.reshape(1, m, 1, 1) if conv else delta
        parts["on_input"] = np.int64(0)
    return parts, dict(
        rank=None,
        alpha=None,
        scale=1.0,
        singular_values=None,
        delta_basis="none",
        relative_singular_values=_desc(delta),
    )


def _oft_constraint(plan: _Plan) -> float:
    return float(plan.alpha) if plan.alpha is not None else 0.0


def _oft_clamp(plan: _Plan, q: np.ndarray, out: int) -> tuple[float, float | None]:
    """(constraint stored in the file, factor the loaders multiply the generators ``q`` by, None when they
    leave them as they are). LyCORIS clamps the Frobenius norm of all blocks at constraint * out_dim."""
    stored = float(round_to(np.float64(_oft_constraint(plan)), plan.dtype))
    limit = stored * out
    if limit > 0:
        qn = float(np.linalg.norm(q)) + 1e-8
        if qn > limit:
            return stored, limit / qn
    return stored, None


def _oft_result(plan: _Plan, q: np.ndarray, stored: float, rel: np.ndarray | None, extra: dict):
    """Parts and truth fields of an OFT / BOFT layer: the generators ``q`` stored as their strict upper triangle
    (so B - B^T = q), the constraint as the 0-d ``alpha``, ``rel`` = sigma(R - I) (relative basis)."""
    parts = {"oft_blocks": np.triu(q, 1), "alpha": np.float64(stored)}
    return parts, dict(
        rank=plan.rank,
        alpha=stored,
        scale=1.0,
        singular_values=None,
        delta_basis="relative",
        relative_singular_values=rel,
        extra=extra,
    )


def _gen_oft(plan: _Plan, rng, mod: archs.Module):
    out = mod.out_features
    b, num = factorization(out, plan.rank)
    f = 0.25 + 0.75 * rng.random()
    q, thetas = _skew_blocks(rng, num, b, f)
    stored, factor = _oft_clamp(plan, q, out)
    if factor is not None:
        thetas = thetas * factor
    rel = 2.0 * thetas / np.sqrt(1.0 + thetas**2)
    return _oft_result(plan, q, stored, _desc(np.repeat(rel, 2, axis=-1)), {"block_size": b, "block_num": num})


def _gen_boft(plan: _Plan, rng, mod: archs.Module):
    out = mod.out_features
    fac = plan.rank
    while True:
        try:
            b, num = power2factorization(out, fac)
            break
        except ValueError:
            if fac >= out:
                raise
            fac += 1
    stages = bin(num - 1).count("1") + 1
    f = 0.25 + 0.75 * rng.random()
    q, _ = _skew_blocks(rng, stages * num, b, f)
    q = q.reshape(stages, num, b, b)
    stored, factor = _oft_clamp(plan, q, out)
    q_eff = q if factor is None else q * factor  # the loaders constrain the stored generator when they read it
    rel = None
    if out <= _BOFT_DENSE_LIMIT:
        rot = boft_rotation(_cayley(q_eff))
        rel = _desc(np.linalg.svd(rot - np.eye(out), compute_uv=False), 1e-10)
    return _oft_result(plan, q, stored, rel, {"block_size": b, "block_num": num, "stages": stages})


def _gen_glora(plan: _Plan, rng, mod: archs.Module):
    r = plan.rank
    m, n, cin = mod.out_features, mod.fan_in, mod.in_features
    s_b = plan.planted(rng, r)
    b1, b2, sb = _lowrank_factors(rng, m, n, r, s_b)
    a1, a2, sa = _lowrank_factors(rng, cin, cin, r, 0.1 * s_b)
    conv = mod.kernel is not None
    parts = {
        "a1": a1.reshape(cin, r, 1, 1) if conv else a1,
        "a2": a2.reshape(r, cin, 1, 1) if conv else a2,
        "b1": b1.reshape(m, r, 1, 1) if conv else b1,
        "b2": b2.reshape(r, cin, *mod.kernel) if conv else b2,
    }
    stored, used = plan.alpha_value(r / 2)
    scale = used / r
    parts["alpha"] = np.float64(stored)
    return parts, dict(
        rank=r,
        alpha=stored,
        scale=scale,
        singular_values=abs(scale) * _desc(sb),
        delta_basis="exact-partial",
        relative_singular_values=abs(scale) * _desc(sa),
    )


def _gen_full(plan: _Plan, rng, mod: archs.Module):
    r = plan.rank
    m, n = mod.out_features, mod.fan_in
    up, down, s = _lowrank_factors(rng, m, n, r, plan.planted(rng, r))
    diff = up @ down
    if mod.kernel is not None:
        diff = diff.reshape(mod.weight_shape)
    return {"diff": diff}, dict(rank=None, alpha=None, scale=1.0, singular_values=_desc(s), delta_basis="exact")


def _gen_norm(plan: _Plan, rng, mod: archs.Module):
    c = mod.out_features
    return (
        {"w_norm": rng.normal(0.0, 0.01, size=c), "b_norm": rng.normal(0.0, 0.01, size=c)},
        dict(rank=None, alpha=None, scale=1.0, singular_values=None, delta_basis="exact"),
    )


# ---------------------------------------------------------------------------------------------------------
# metadata per trainer

_FIXED_DATE = "2024-01-01T00:00:00"
_KOHYA_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "sd3": "sd3m", "flux1": "flux1"}
_KOHYA_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-512",
    "sdxl": "stable-diffusion-xl-v1-base",
    "sd3": "stable-diffusion-3-medium",
    "flux1": "flux-1-dev",
}
_OT_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2",
    "sdxl": "stable-diffusion-xl-v1-base",
    "sd3": "stable-diffusion-v3-medium",
    "flux1": "Flux.1-dev",
}
_IMPL = {
    "sd1": "diffusers",
    "sd2": "diffusers",
    "sdxl": "https://github.com/Stability-AI/generative-models",
    "sd3": "https://github.com/Stability-AI/generative-models",
    "flux1": "https://github.com/black-forest-labs/flux",
}
_RESOLUTION = {"sd1": "512x512", "sd2": "512x512", "sdxl": "1024x1024", "sd3": "1024x1024", "flux1": "1024x1024"}
_CHECKPOINT = {
    "sd1": "v1-5-pruned-emaonly.safetensors",
    "sd2": "v2-1_512-ema-pruned.safetensors",
    "sdxl": "sd_xl_base_1.0.safetensors",
    "sd3": "sd3_medium.safetensors",
    "flux1": "flux1-dev.safetensors",
}
_HF_BASE = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1-base",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "flux1": "black-forest-labs/FLUX.1-dev",
}
_LYCO_ALGO = {
    "locon": "locon",
    "lora-tucker": "locon",
    "loha": "loha",
    "loha-tucker": "loha",
    "lokr": "lokr",
    "lokr-full": "lokr",
    "dora": "locon",
    "ia3": "ia3",
    "oft": "diag-oft",
    "boft": "boft",
    "glora": "glora",
    "full": "full",
    "norm": "lora",
}


def _fmt_float(x: float) -> str:
    return repr(float(x))


def _modelspec(family: str, arch: str, impl: str, adapter_suffix: str = "lora") -> dict[str, str]:
    md = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{arch}/{adapter_suffix}",
        "modelspec.implementation": impl,
        "modelspec.title": "lora-audit synthetic",
        "modelspec.resolution": _RESOLUTION[family],
        "modelspec.date": _FIXED_DATE,
    }
    if family != "flux1":
        md["modelspec.prediction_type"] = "epsilon"
    return md


def _leaf_names(paths: Iterable[str]) -> list[str]:
    names = set()
    for p in paths:
        parts = p.split(".")
        leaf = parts[-1]
        if leaf.isdigit() and len(parts) > 1:
            leaf = parts[-2] + "." + leaf
        names.add(leaf)
    return sorted(names)


def _metadata(plan: _Plan, adapter: str, has_conv: bool, alpha_decl: float | None, paths_by_comp) -> dict[str, str]:
    fmt, family, rank = plan.fmt, plan.family, plan.rank
    if fmt == "kohya":
        lyco = adapter not in ("lora",)
        if lyco:
            module = "lycoris.kohya"
        else:
            module = {"flux1": "networks.lora_flux", "sd3": "networks.lora_sd3"}.get(family, "networks.lora")
        args: dict[str, str] = {}
        if lyco:
            args["algo"] = _LYCO_ALGO[adapter]
            if adapter in ("lora-tucker", "loha-tucker"):
                args["use_tucker"] = "True"
            if adapter == "dora":
                args["dora_wd"] = "True"
            if adapter == "lokr-full":
                args["full_matrix"] = "True"
            if adapter in ("lokr", "lokr-full"):
                args["factor"] = str(plan.factor)
                if plan.decompose_both:
                    args["decompose_both"] = "True"
            if adapter == "norm":
                args["train_norm"] = "True"
        if has_conv and adapter not in ("ia3", "oft", "boft", "full", "norm"):
            args["conv_dim"] = str(rank)
            args["conv_alpha"] = _fmt_float(alpha_decl if alpha_decl is not None else rank)
        md = {
            "ss_network_module": module,
            "ss_network_dim": str(rank),
            "ss_network_alpha": _fmt_float(alpha_decl if alpha_decl is not None else 1.0),
            "ss_base_model_version": _KOHYA_VERSION[family],
            "ss_v2": "True" if family == "sd2" else "False",
            "ss_sd_model_name": _CHECKPOINT[family],
            "ss_output_name": "lora-audit-synthetic",
            "ss_training_comment": "synthetic file written by lora-audit",
        }
        if args:
            md["ss_network_args"] = json.dumps(args)
        md.update(_modelspec(family, _KOHYA_ARCH[family], _IMPL[family]))
        return md
    if fmt == "onetrainer":
        return _modelspec(family, _OT_ARCH[family], _IMPL[family])
    if fmt == "diffusers-peft":
        cfg: dict[str, Any] = {}
        for comp, paths in paths_by_comp.items():
            prefix = _DIFFUSERS_COMPONENT[comp].rstrip(".")
            cfg.update(
                {
                    f"{prefix}.r": rank,
                    f"{prefix}.lora_alpha": alpha_decl,
                    f"{prefix}.target_modules": _leaf_names(paths),
                    f"{prefix}.use_dora": adapter == "dora",
                    f"{prefix}.use_rslora": False,
                    f"{prefix}.peft_type": "LORA",
                    f"{prefix}.rank_pattern": {},
                    f"{prefix}.alpha_pattern": {},
                    f"{prefix}.lora_dropout": 0.0,
                    f"{prefix}.bias": "none",
                    f"{prefix}.init_lora_weights": True,
                }
            )
        return {"format": "pt", "lora_adapter_metadata": json.dumps(cfg, indent=2, sort_keys=True)}
    if fmt in ("peft", "diffusers-legacy", "bfl-control"):
        return {"format": "pt"}
    if fmt == "ai-toolkit":
        return {
            "format": "pt",
            "software": json.dumps(
                {"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit", "version": "0.1.0"}
            ),
            "name": "lora-audit-synthetic",
            "version": "1.0",
            "ss_base_model_version": "flux.1",
            "training_info": json.dumps({"step": 1000, "epoch": 0}),
        }
    if fmt == "simpletuner-lycoris":
        conf: dict[str, Any] = {"algo": _LYCO_ALGO.get(adapter, "lora"), "multiplier": 1.0, "linear_dim": rank}
        if alpha_decl is not None:
            conf["linear_alpha"] = alpha_decl
        if adapter in ("lokr", "lokr-full"):
            conf["factor"] = plan.factor
            if adapter == "lokr-full":
                conf["full_matrix"] = True
        if adapter == "dora":
            conf["dora_wd"] = True
        if adapter in ("lora-tucker", "loha-tucker"):
            conf["use_tucker"] = True
        return {"lycoris_config": json.dumps(conf)}
    return {}


# ---------------------------------------------------------------------------------------------------------
# build


def _resolve_text_encoders(fmt: str, family: str, text_encoders: bool | Iterable[str]) -> tuple[str, ...]:
    supported = _supported_tes(fmt, family)
    if text_encoders is True:
        return supported
    if text_encoders is False or text_encoders is None:
        return ()
    wanted = tuple(text_encoders)
    for c in wanted:
        if c not in supported:
            raise ValueError(f"format {fmt!r} has no text encoder component {c!r} for {family}; supported: {supported}")
    return tuple(c for c in supported if c in wanted)


def build(
    family: str,
    fmt: str,
    *,
    adapter: str = "lora",
    rank: int = 4,
    alpha: float | None = None,
    dtype: str = "F32",
    targets: str = "attn",
    text_encoders: bool | Iterable[str] = True,
    seed: int = 0,
    spectrum: Callable[[int], np.ndarray] | None = None,
    max_modules: int | None = None,
    metadata: Mapping[str, str] | None = None,
    factor: int = -1,
    decompose_both: bool = False,
) -> Synth:
    """Synthesise one adapter file in memory.

    family         sd1 | sd2 | sdxl | sd3 | flux1
    fmt            one of FORMATS; combinations that do not exist in the wild raise ValueError
                   (xlabs / bfl-control / ai-toolkit: flux1 only; cloneofsimo: sd1 only;
                   diffusers-legacy and textual-inversion: sd1, sd2, sdxl).
    adapter        one of ADAPTERS (``lokr-full`` stores both Kronecker factors full). ``rank`` is the LoRA
                   rank, the LoKr/LoHa/GLoRA lora_dim, the OFT/BOFT block factor, the planted rank of a
                   ``full`` diff and the number of vectors of a textual inversion.
    alpha          kohya-style formats: the 0-d ``alpha`` tensor (default rank/2); diffusers-peft: metadata
                   ``lora_alpha`` (default rank/2); peft: ``lora_alpha`` in ``Synth.adapter_config`` (default
                   rank, so the file alone gives the right scale); OFT/BOFT: the constraint (default 0);
                   formats without alpha (xlabs, ai-toolkit, bfl-control, diffusers-legacy, cloneofsimo)
                   reject an alpha.
    dtype          file dtype of the float tensors (F64 F32 F16 BF16 F8_E4M3 F8_E5M2).
    targets        attn | blocks | all | all-linear | everything | te-only (see archs.select); ``all``
                   adds the UNet ResNet and sampler convs (LoCon). bfl-control always includes ``img_in``
                   (widened to 128 inputs) and the touched blocks' ``query_norm``/``key_norm`` scales.
    text_encoders  True: every text encoder the format carries for the family; False: none; or an
                   iterable of components (te, te1, te2, te3).
    max_modules    keep the first N modules (denoiser first, then text encoders, in module order).
    metadata       extra/override ``__metadata__`` entries.
    factor         LoKr factor for :func:`factorization` (-1: most balanced).
    decompose_both LoKr: also decompose w1 when rank < max(w1 shape) / 2.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if fmt not in _FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    spec = _FORMATS[fmt]
    if family not in spec.families:
        raise ValueError(f"format {fmt!r} does not exist for {family}; it exists for {spec.families}")
    if adapter not in spec.adapters:
        raise ValueError(f"adapter {adapter!r} is not written in format {fmt!r}; expected one of {spec.adapters}")
    if targets not in spec.targets:
        raise ValueError(f"targets {targets!r} do not exist in format {fmt!r}; expected one of {spec.targets}")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError("rank must be a positive int")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError("seed must be a non-negative int")
    if max_modules is not None and max_modules < 1:
        raise ValueError("max_modules must be positive")
    if alpha is not None:
        if spec.alpha == "none":
            raise ValueError(f"format {fmt!r} stores no alpha")
        if adapter in ("ia3", "full", "norm"):
            raise ValueError(f"adapter {adapter!r} has no alpha")
        if not math.isfinite(float(alpha)):
            raise ValueError("alpha must be finite")
    if adapter == "norm" and family not in ("sd1", "sd2", "sdxl"):
        raise ValueError("norm tuning is generated for the UNet families (their LayerNorm/GroupNorm layers)")

    plan = _Plan(
        fmt=fmt,
        family=family,
        adapter=adapter,
        rank=rank,
        alpha=alpha,
        dtype=dtype,
        spectrum=spectrum,
        seed=seed,
        factor=factor,
        decompose_both=decompose_both,
    )
    if fmt == "textual-inversion":
        synth = _build_ti(plan)
    else:
        synth = _build_adapter(plan, targets, text_encoders, max_modules)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("metadata keys and values must be strings")
        synth.metadata.update(metadata)
    return synth


def _plan_modules(plan: _Plan, targets: str, text_encoders) -> list[tuple[str, str, archs.Module]]:
    fmt, family = plan.fmt, plan.family
    if targets == "te-only" and not _supported_tes(fmt, family):
        raise ValueError(f"format {fmt!r} carries no text encoder for {family}")
    comps: list[tuple[str, str]] = []
    if targets != "te-only":
        comps.append((archs.denoiser(family), _denoiser_naming(fmt, family)))
    tes = _resolve_text_encoders(fmt, family, text_encoders)
    if targets == "te-only" and not tes:
        raise ValueError("targets='te-only' with no text encoder selected")
    for c in tes:
        comps.append((c, archs.namings(family, c)[0]))
    plan_list: list[tuple[str, str, archs.Module]] = []
    for comp, naming in comps:
        den = comp == archs.denoiser(family)
        every = archs.modules(family, comp, naming, include_norms=plan.adapter == "norm")
        if plan.adapter == "norm":
            chosen = [m for m in every if m.kind == "norm"]
        else:
            te_targets = "attn" if targets == "attn" else "blocks"
            chosen = archs.select(every, targets if den else te_targets)
            if fmt == "xlabs":
                chosen = [m for m in chosen if m.path.startswith("double_blocks.")]
            if fmt == "cloneofsimo":
                # lora_diffusion wraps the Linear layers of CrossAttention/Attention (+ GEGLU) in the UNet and
                # of CLIPAttention in the text encoder
                keep_geglu = den and targets == "blocks"
                chosen = [m for m in every if m.group == "attn" or (keep_geglu and m.path.endswith("ff.net.0.proj"))]
                chosen = _clone_order(chosen)
            if fmt == "bfl-control" and den:
                img_in = archs.Module("img_in", 3072, 128, None, "linear", "embed")
                chosen = [img_in] + [m for m in chosen if m.path != "img_in"]
        plan_list += [(comp, naming, m) for m in chosen]
    if not plan_list:
        raise ValueError("no module matches these targets")
    return plan_list


def _clone_order(mods: list[archs.Module]) -> list[archs.Module]:
    """lora_diffusion numbers modules in the registration order of the diffusers of its time, whose
    BasicTransformerBlock registered attn1, ff, attn2 (today: attn1, attn2, ff)."""
    rank = {"attn1": 0, "ff": 1, "attn2": 2}

    def block_and_sub(m: archs.Module) -> tuple[str, int]:
        parts = m.path.split(".")
        if "transformer_blocks" in parts:
            i = parts.index("transformer_blocks") + 2
            return ".".join(parts[:i]), rank.get(parts[i], 3)
        return m.path, 0

    order = {}
    for m in mods:
        order.setdefault(block_and_sub(m)[0], len(order))
    return sorted(mods, key=lambda m: (order[block_and_sub(m)[0]], block_and_sub(m)[1]))


def _build_adapter(plan: _Plan, targets: str, text_encoders, max_modules) -> Synth:
    fmt, family, adapter = plan.fmt, plan.family, plan.adapter
    style = plan.spec.style
    suffixes = _SUFFIX[style]
    todo = _plan_modules(plan, targets, text_encoders)
    if max_modules is not None:
        todo = todo[:max_modules]

    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    truth: dict[str, Truth] = {}
    counters: dict[str, int] = {}
    paths_by_comp: dict[str, list[str]] = {}
    has_conv = False
    clone_ranks: dict[str, str] = {}

    def put(name: str, value: np.ndarray, dt: str) -> None:
        if name in tensors:
            raise AssertionError(f"duplicate tensor {name}")
        tensors[name] = encode(value, dt)
        dtypes[name] = dt

    for comp, naming, mod in todo:
        den = comp == archs.denoiser(family)
        idx = counters.get("unet" if den else "te", 0)
        counters["unet" if den else "te"] = idx + 1
        stem = _stem(fmt, family, comp, mod.path, idx)
        paths_by_comp.setdefault(comp, []).append(mod.path)
        has_conv = has_conv or (mod.kernel is not None and mod.kernel != (1, 1))
        rng = _rng(plan.seed, f"{fmt}|{adapter}|{stem}")
        if adapter in ("lora", "locon", "dora", "lora-tucker"):
            parts, t = _gen_lora(plan, rng, mod, tucker=adapter == "lora-tucker", dora=adapter == "dora")
        elif adapter in ("loha", "loha-tucker"):
            parts, t = _gen_loha(plan, rng, mod, tucker=adapter == "loha-tucker")
        elif adapter in ("lokr", "lokr-full"):
            parts, t = _gen_lokr(plan, rng, mod, full=adapter == "lokr-full")
        elif adapter == "ia3":
            parts, t = _gen_ia3(plan, rng, mod)
        elif adapter == "oft":
            parts, t = _gen_oft(plan, rng, mod)
        elif adapter == "boft":
            parts, t = _gen_boft(plan, rng, mod)
        elif adapter == "glora":
            parts, t = _gen_glora(plan, rng, mod)
        elif adapter == "full":
            parts, t = _gen_full(plan, rng, mod)
        else:
            parts, t = _gen_norm(plan, rng, mod)
        if fmt == "bfl-control":
            parts["lora_up_bias"] = rng.normal(0.0, 0.01, size=mod.out_features)
        names: dict[str, str] = {}
        for role, value in parts.items():
            name = stem + suffixes[role]
            put(name, value, "I64" if role == "on_input" else plan.dtype)
            names[role] = name
        if fmt == "cloneofsimo":
            clone_ranks[f"{stem}:rank"] = str(plan.rank)
        kind = KIND_OF[adapter]
        if adapter in ("lora", "locon", "lora-tucker"):
            # the per-layer kind follows the tensors, as audit/adapters decides it: a Tucker core is
            # lora-tucker, a spatial kernel > 1x1 is locon, anything else lora
            if "lora_mid" in parts:
                kind = "lora-tucker"
            elif mod.kernel is not None and mod.kernel[0] * mod.kernel[1] > 1:
                kind = "locon"
            else:
                kind = "lora"
        truth[stem] = Truth(
            kind=kind,
            component=comp,
            module=mod.path,
            naming=naming,
            out_features=mod.out_features,
            in_features=mod.in_features,
            kernel=mod.kernel,
            rank=t["rank"],
            alpha=t["alpha"],
            scale=t["scale"],
            singular_values=t["singular_values"],
            delta_basis=t["delta_basis"],
            relative_singular_values=t.get("relative_singular_values"),
            parts=names,
            extra=t.get("extra", {}),
        )

    if fmt == "bfl-control":
        _add_control_norms(plan, todo, put, truth)

    alpha_decl = None
    if plan.spec.alpha != "none" and adapter not in ("ia3", "full", "norm"):
        if adapter in ("oft", "boft"):
            alpha_decl = _oft_constraint(plan)
        elif plan.spec.alpha == "config":
            alpha_decl = float(plan.alpha) if plan.alpha is not None else float(plan.rank)
        else:
            alpha_decl = float(plan.alpha) if plan.alpha is not None else plan.rank / 2
    md = _metadata(plan, adapter, has_conv, alpha_decl, paths_by_comp)
    if fmt == "cloneofsimo":
        md = dict(_clone_metadata(targets, paths_by_comp), **clone_ranks)
    synth = Synth(tensors, dtypes, md, truth, family=family, fmt=fmt, adapter=adapter)
    if fmt == "peft":
        synth.adapter_config = _peft_config(plan, alpha_decl, paths_by_comp)
    return synth


def _add_control_norms(plan: _Plan, todo, put, truth: dict[str, Truth]) -> None:
    """BFL control LoRAs replace the RMSNorm scales (head dim 128) of every block they touch."""
    doubles, singles = [], []
    for _comp, _naming, mod in todo:
        parts = mod.path.split(".")
        if parts[0] == "double_blocks" and parts[1] not in doubles:
            doubles.append(parts[1])
        elif parts[0] == "single_blocks" and parts[1] not in singles:
            singles.append(parts[1])
    stems = []
    for i in doubles:
        for s in ("img", "txt"):
            stems += [f"double_blocks.{i}.{s}_attn.norm.query_norm", f"double_blocks.{i}.{s}_attn.norm.key_norm"]
    for i in singles:
        stems += [f"single_blocks.{i}.norm.query_norm", f"single_blocks.{i}.norm.key_norm"]
    for stem in stems:
        rng = _rng(plan.seed, f"bfl-control|scale|{stem}")
        name = stem + ".scale"
        put(name, 1.0 + rng.normal(0.0, 0.05, size=128), plan.dtype)
        truth[stem] = Truth(
            kind="norm",
            component="transformer",
            module=stem,
            naming="bfl",
            out_features=128,
            in_features=128,
            kernel=None,
            rank=None,
            alpha=None,
            scale=1.0,
            singular_values=None,
            delta_basis="none",
            parts={"set_weight": name},
        )


def _clone_metadata(targets: str, paths_by_comp) -> dict[str, str]:
    md: dict[str, str] = {}
    if "unet" in paths_by_comp:
        classes = ["CrossAttention", "Attention"] + (["GEGLU"] if targets == "blocks" else [])
        md["unet"] = json.dumps(classes)
    if "te" in paths_by_comp:
        md["text_encoder"] = json.dumps(["CLIPAttention"])
    return md


def _peft_config(plan: _Plan, alpha_decl: float | None, paths_by_comp) -> dict[str, Any]:
    paths = [p for ps in paths_by_comp.values() for p in ps]
    common = {
        "base_model_name_or_path": _HF_BASE[plan.family],
        "target_modules": _leaf_names(paths),
        "task_type": None,
        "inference_mode": True,
        "revision": None,
    }
    a = plan.adapter
    if a in ("lora", "dora"):
        return dict(
            common,
            peft_type="LORA",
            r=plan.rank,
            lora_alpha=alpha_decl,
            use_dora=a == "dora",
            use_rslora=False,
            lora_dropout=0.0,
            bias="none",
            rank_pattern={},
            alpha_pattern={},
            init_lora_weights=True,
        )
    if a == "loha":
        return dict(common, peft_type="LOHA", r=plan.rank, alpha=alpha_decl, rank_pattern={}, alpha_pattern={})
    if a == "lokr":
        return dict(
            common,
            peft_type="LOKR",
            r=plan.rank,
            alpha=alpha_decl,
            decompose_both=plan.decompose_both,
            decompose_factor=plan.factor,
            rank_pattern={},
            alpha_pattern={},
        )
    return dict(common, peft_type="IA3", feedforward_modules=[])


def _build_ti(plan: _Plan) -> Synth:
    widths = {"sd1": [("emb_params", 768)], "sd2": [("emb_params", 1024)], "sdxl": [("clip_l", 768), ("clip_g", 1280)]}[
        plan.family
    ]
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    truth: dict[str, Truth] = {}
    n = plan.rank
    for name, d in widths:
        rng = _rng(plan.seed, f"textual-inversion|{name}")
        s_all = plan.planted(rng, n)
        up, down, s = _lowrank_factors(rng, n, d, n, s_all)
        emb = up @ down  # [n, d] with singular values s
        tensors[name] = encode(emb, plan.dtype)
        dtypes[name] = plan.dtype
        truth[name] = Truth(
            kind="textual-inversion",
            component="embedding",
            module=name,
            naming="",
            out_features=n,
            in_features=d,
            kernel=None,
            rank=n,
            alpha=None,
            scale=1.0,
            singular_values=_desc(s),
            delta_basis="exact",
            parts={"embedding": name},
        )
    return Synth(tensors, dtypes, {}, truth, family=plan.family, fmt=plan.fmt, adapter="textual-inversion")


def write(path: str | PathLike[str], synth: Synth) -> int:
    """Write ``synth`` as a safetensors file; return the number of bytes written."""
    return write_safetensors(path, synth.tensors, synth.dtypes, synth.metadata)
