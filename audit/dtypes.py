"""The safetensors dtype table and value decoders.

The accepted set is pinned here, explicitly, instead of being taken from whichever ``safetensors`` release
happens to be installed: that library's set grows between versions, and a file's verdict must not depend on
it. The set below is the one safetensors 0.8.0 accepts.

Every decoder turns raw little-endian bytes into a flat ``float64`` numpy array without Python loops:
IEEE formats through numpy views, BF16 by widening to the upper half of a float32, and the 8- and 4-bit
float formats through lookup tables built from their format definitions (sign, exponent bits, mantissa
bits, bias, and how the format spends its special codes).
"""

from __future__ import annotations

import numpy as np

from audit.errors import AuditError

#: dtype name -> bits per element (safetensors 0.8.0).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

#: The accepted names, in the order the message of an unknown-dtype error lists them.
ACCEPTED_DTYPES: tuple[str, ...] = tuple(DTYPE_BITS)

#: dtypes whose values :func:`decode` cannot turn into float64.
#: C64 is complex; the 6-bit formats have no packing order defined by the safetensors format.
UNDECODABLE: frozenset[str] = frozenset({"C64", "F6_E2M3", "F6_E3M2"})

_NUMPY_VIEW = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I8": "i1",
    "U8": "u1",
    "I16": "<i2",
    "U16": "<u2",
    "I32": "<i4",
    "U32": "<u4",
    "I64": "<i8",
    "U64": "<u8",
}


def minifloat_table(exp_bits: int, man_bits: int, bias: int, specials: str) -> np.ndarray:
    """Values of every code of a small binary float format with a sign bit, as float64.

    ``specials`` says how the format uses its special codes:
      - ``"ieee"``: the all-ones exponent holds +-Inf (mantissa 0) and NaN (otherwise) - F8_E5M2;
      - ``"fn"``: finite, only the all-ones exponent with the all-ones mantissa is NaN - F8_E4M3 (e4m3fn);
      - ``"fnuz"``: finite, no negative zero; the negative-zero code 0x80 is the only NaN - the FNUZ formats;
      - ``"finite"``: every code is a finite number - F4 (E2M1) and the 6-bit formats.
    Exponent 0 encodes subnormals: ``(m / 2**man_bits) * 2**(1 - bias)``.
    """
    nbits = 1 + exp_bits + man_bits
    codes = np.arange(1 << nbits, dtype=np.int64)
    sign = (codes >> (exp_bits + man_bits)) & 1
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    frac = man.astype(np.float64) / float(1 << man_bits)
    normal = (1.0 + frac) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = frac * np.exp2(1.0 - bias)
    values = np.where(exp == 0, subnormal, normal)
    values = np.where(sign == 1, -values, values)
    exp_all = exp == (1 << exp_bits) - 1
    man_all = man == (1 << man_bits) - 1
    if specials == "ieee":
        values = np.where(exp_all & (man == 0), np.where(sign == 1, -np.inf, np.inf), values)
        values = np.where(exp_all & (man != 0), np.nan, values)
    elif specials == "fn":
        values = np.where(exp_all & man_all, np.nan, values)
    elif specials == "fnuz":
        values[1 << (nbits - 1)] = np.nan
    elif specials != "finite":
        raise ValueError(f"unknown special-code convention {specials!r}")
    values.setflags(write=False)
    return values


def e8m0_table() -> np.ndarray:
    """F8_E8M0 (the MX block scale): unsigned, exponent only, bias 127, 0xFF is NaN, no zero."""
    values = np.exp2(np.arange(256, dtype=np.float64) - 127.0)
    values[255] = np.nan
    values.setflags(write=False)
    return values


#: 256-entry (16 for F4, 64 for F6) value tables, indexed by the stored code.
TABLES: dict[str, np.ndarray] = {
    "F8_E4M3": minifloat_table(4, 3, 7, "fn"),
    "F8_E5M2": minifloat_table(5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": minifloat_table(4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": minifloat_table(5, 2, 16, "fnuz"),
    "F8_E8M0": e8m0_table(),
    "F4": minifloat_table(2, 1, 1, "finite"),
    "F6_E2M3": minifloat_table(2, 3, 1, "finite"),
    "F6_E3M2": minifloat_table(3, 2, 3, "finite"),
}


def check_decodable(dtype: str) -> None:
    """Raise ``AuditError`` unless :func:`decode` supports ``dtype`` (LA111 unknown, LA163 not decodable)."""
    if dtype not in DTYPE_BITS:
        raise AuditError("LA111", f"unknown dtype {dtype!r}")
    if dtype in UNDECODABLE:
        why = "complex values" if dtype == "C64" else "the format defines no packing order for 6-bit values"
        raise AuditError("LA163", f"value decoding not supported for dtype {dtype} ({why})")


def decode(buf, dtype: str, numel: int) -> np.ndarray:
    """Decode ``buf`` (bytes-like, exactly the tensor's bytes) into a flat float64 array of ``numel`` values.

    F4 packs two values per byte, the first in the low nibble (the convention of PyTorch's
    ``float4_e2m1fn_x2`` and of the OCP MX reference code). BOOL decodes as 0.0/1.0 (any non-zero byte
    is true, as numpy and PyTorch read it). 64-bit integers beyond 2**53 lose precision in float64.
    Raises ``AuditError("LA163")`` for :data:`UNDECODABLE` dtypes.
    """
    check_decodable(dtype)
    nbytes = len(buf)
    expected = (numel * DTYPE_BITS[dtype] + 7) // 8
    if nbytes != expected:
        raise AuditError("LA116", f"{dtype} x {numel} needs {expected} bytes, got {nbytes}")
    if numel == 0:
        return np.zeros(0, dtype=np.float64)
    view = _NUMPY_VIEW.get(dtype)
    if view is not None:
        arr = np.frombuffer(buf, dtype=view)
        if dtype == "F64":
            return arr if arr.dtype.isnative else arr.astype(np.float64)
        return arr.astype(np.float64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype == "BF16":
        wide = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << np.uint32(16)
        return wide.view(np.float32).astype(np.float64)
    if dtype == "BOOL":
        return (raw != 0).astype(np.float64)
    if dtype == "F4":
        codes = np.empty(raw.size * 2, dtype=np.uint8)
        codes[0::2] = raw & 0x0F
        codes[1::2] = raw >> 4
        return TABLES["F4"].take(codes[:numel])
    return TABLES[dtype].take(raw)
