"""audit.container / audit.dtypes: API, decoding, round trips, real files, speed and memory bounds.

The hostile-input catalogue (security.md sections A-G) lives in test_container_hostile.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import time
import tracemalloc
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from audit import container as C
from audit.container import Limits, TensorInfo, open_safetensors, parse_nested_json, sniff
from audit.dtypes import ACCEPTED_DTYPES, DTYPE_BITS, TABLES, decode, minifloat_table
from audit.errors import AuditError
from conftest import real_fixtures_dir


# st() / T() / F / file_writer() are shared with test_container_hostile.py (and, through it,
# test_pipeline_hostile.py).


def st(hdr, data: bytes = b"") -> bytes:
    """security.md notation: u64 little-endian length + header bytes + data,
    ``struct.pack("<Q", len(hdr_bytes)) + hdr_bytes + data``; dict headers are JSON-encoded."""
    if isinstance(hdr, dict):
        hdr = json.dumps(hdr).encode()
    elif isinstance(hdr, str):
        hdr = hdr.encode()
    return struct.pack("<Q", len(hdr)) + hdr + data


def T(dt, shape, b, e) -> dict:
    return {"dtype": dt, "shape": shape, "data_offsets": [b, e]}


F = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes


def file_writer(directory: Path, default_name: str):
    """``write(content, name=default_name) -> Path``: writes ``content`` to a file in ``directory``."""

    def _write(content: bytes, name: str = default_name) -> Path:
        p = directory / name
        p.write_bytes(content)
        return p

    return _write


@pytest.fixture
def write(tmp_path):
    return file_writer(tmp_path, "x.safetensors")


# ---------------------------------------------------------------------------------------------------------
# dtype table and decoders


def test_dtype_table_is_the_pinned_safetensors_set():
    expected = "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64"
    assert list(ACCEPTED_DTYPES) == expected.split()
    assert DTYPE_BITS["F4"] == 4 and DTYPE_BITS["F6_E2M3"] == 6 and DTYPE_BITS["C64"] == 64 and DTYPE_BITS["BOOL"] == 8


@pytest.mark.parametrize(
    "dtype, torch_name",
    [
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
        ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
        ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
        ("F8_E8M0", "float8_e8m0fnu"),
    ],
)
def test_f8_tables_match_torch(dtype, torch_name):
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, torch_name, None)
    if tdt is None:
        pytest.skip(f"torch has no {torch_name}")
    ref = torch.arange(256, dtype=torch.uint8).view(tdt).to(torch.float64).numpy()
    ours = TABLES[dtype]
    assert ours.shape == (256,)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(ours[ok], ref[ok])
    # signed zeros must match too (e.g. FNUZ has no negative zero: 0x80 is NaN there)
    np.testing.assert_array_equal(np.signbit(ours[ok]), np.signbit(ref[ok]))


def test_minifloat_tables_hand_values():
    e4m3 = TABLES["F8_E4M3"]
    assert e4m3[0x7E] == 448.0 and np.isnan(e4m3[0x7F]) and np.isnan(e4m3[0xFF])
    assert e4m3[0x01] == 2.0**-9 and e4m3[0x08] == 2.0**-6 and e4m3[0x38] == 1.0 and e4m3[0xB8] == -1.0
    e5m2 = TABLES["F8_E5M2"]
    assert e5m2[0x7B] == 57344.0 and e5m2[0x7C] == np.inf and e5m2[0xFC] == -np.inf and np.isnan(e5m2[0x7D])
    assert e5m2[0x01] == 2.0**-16 and e5m2[0x3C] == 1.0
    fnuz = TABLES["F8_E4M3FNUZ"]
    assert np.isnan(fnuz[0x80]) and fnuz[0x7F] == 240.0 and fnuz[0x40] == 1.0 and np.isnan(fnuz).sum() == 1
    assert TABLES["F8_E5M2FNUZ"][0x7F] == 57344.0 and np.isnan(TABLES["F8_E5M2FNUZ"]).sum() == 1
    e8m0 = TABLES["F8_E8M0"]
    assert e8m0[127] == 1.0 and e8m0[128] == 2.0 and e8m0[0] == 2.0**-127 and np.isnan(e8m0[255])
    # E2M1: the 8 magnitudes of the OCP MX FP4 format
    assert list(TABLES["F4"][:8]) == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert list(TABLES["F4"][8:]) == [-0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    # 6-bit formats: largest magnitudes of E2M3 (7.5) and E3M2 (28)
    assert TABLES["F6_E2M3"][0x1F] == 7.5 and TABLES["F6_E3M2"][0x1F] == 28.0
    assert TABLES["F6_E2M3"][0x01] == 0.125 and TABLES["F6_E3M2"][0x01] == 0.0625
    with pytest.raises(ValueError):
        minifloat_table(2, 1, 1, "bogus")


def test_decode_f4_low_nibble_first_and_bf16():
    out = decode(bytes([0x21, 0xF7]), "F4", 4)
    assert list(out) == [0.5, 1.0, 6.0, -6.0]
    bf = np.array([1.0, -2.5, 3.140625, np.inf], dtype=np.float32)
    raw = (bf.view(np.uint32) >> 16).astype("<u2").tobytes()
    np.testing.assert_array_equal(decode(raw, "BF16", 4), bf.astype(np.float64))
    assert list(decode(bytes([0, 1, 2, 255]), "BOOL", 4)) == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(AuditError) as ei:
        decode(b"\x00" * 8, "C64", 1)
    assert ei.value.code == "LA163"
    with pytest.raises(AuditError) as ei:
        decode(b"\x00" * 3, "F6_E2M3", 4)
    assert ei.value.code == "LA163"
    with pytest.raises(AuditError) as ei:
        decode(b"\x00" * 3, "F32", 1)
    assert ei.value.code == "LA116"


def test_nan_and_inf_survive_decoding(write):
    vals = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    half = np.full(3, np.nan, dtype=np.float16)
    bf = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    data = vals.tobytes() + half.tobytes() + bf
    hdr = {"a": T("F32", [4], 0, 16), "h": T("F16", [3], 16, 22), "b": T("BF16", [4], 22, 30)}
    with open_safetensors(write(st(hdr, data))) as f:
        a = f.read_array("a")
        assert np.isnan(a[0]) and a[1] == np.inf and a[2] == -np.inf and a[3] == 1.5
        assert np.isnan(f.read_array("h")).all()
        b = f.read_array("b")
        assert np.isnan(b[0]) and b[1] == np.inf and b[2] == -np.inf and b[3] == 1.5


# ---------------------------------------------------------------------------------------------------------
# round trips against the safetensors library (as a writer only)


def test_roundtrip_numpy_writer(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {
        "f64": rng.standard_normal((3, 5)),
        "f32": rng.standard_normal((4, 7)).astype(np.float32),
        "f16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "i8": rng.integers(-128, 127, (9,), dtype=np.int8),
        "u8": rng.integers(0, 255, (2, 2), dtype=np.uint8),
        "i16": rng.integers(-3000, 3000, (5,), dtype=np.int16),
        "u16": rng.integers(0, 60000, (5,), dtype=np.uint16),
        "i32": rng.integers(-(2**31), 2**31 - 1, (6,), dtype=np.int32),
        "u32": rng.integers(0, 2**32 - 1, (6,), dtype=np.uint32),
        "i64": rng.integers(-(2**40), 2**40, (3,), dtype=np.int64),
        "u64": rng.integers(0, 2**40, (3,), dtype=np.uint64),
        "bool": rng.integers(0, 2, (4, 2)).astype(bool),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "rt.safetensors"
    sn.save_file(tensors, str(path), metadata={"k": "v", "ss_network_dim": "4"})
    with open_safetensors(path) as f:
        assert f.metadata == {"k": "v", "ss_network_dim": "4"}
        assert set(f.tensors) == set(tensors)
        assert f.findings == []
        for name, ref in tensors.items():
            info = f.tensors[name]
            assert info.shape == ref.shape and info.numel == ref.size
            got = f.read_array(name)
            assert got.dtype == np.float64 and got.shape == ref.shape
            np.testing.assert_array_equal(got, ref.astype(np.float64))
            assert bytes(f.read_bytes(name)) == np.ascontiguousarray(ref).tobytes()


def test_roundtrip_torch_writer_bf16_and_f8(tmp_path):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g) * 3
    tensors = {
        "bf16": base.to(torch.bfloat16),
        "f8e4m3": base.to(torch.float8_e4m3fn),
        "f8e5m2": base.to(torch.float8_e5m2),
        "f16": base.to(torch.float16),
    }
    path = tmp_path / "t.safetensors"
    stt.save_file(tensors, str(path))
    with open_safetensors(path) as f:
        assert {n: f.tensors[n].dtype for n in tensors} == {
            "bf16": "BF16", "f8e4m3": "F8_E4M3", "f8e5m2": "F8_E5M2", "f16": "F16"}
        for name, ref in tensors.items():
            np.testing.assert_array_equal(f.read_array(name), ref.to(torch.float64).numpy())


def test_tensorinfo_offsets_are_absolute(write):
    data = F + bytes(range(8))
    hdr = {"__metadata__": {"a": "b"}, "w": T("F32", [2, 2], 0, 16), "u": T("U8", [8], 16, 24)}
    raw = st(hdr, data)
    path = write(raw)
    with open_safetensors(path) as f:
        n = struct.unpack("<Q", raw[:8])[0]
        assert f.header_len == n and f.data_start == 8 + n and f.size == len(raw)
        assert f.tensors["w"] == TensorInfo("w", "F32", (2, 2), 4, 8 + n, 8 + n + 16)
        assert f.tensors["u"].start == 8 + n + 16 and f.tensors["u"].nbytes == 8
        assert list(f.tensors) == ["w", "u"]  # header order
        assert raw[f.tensors["u"].start : f.tensors["u"].end] == bytes(range(8))
        np.testing.assert_array_equal(f.read_array("w"), np.arange(4.0).reshape(2, 2))
        assert bytes(f.read_range(f.data_start, f.size)) == data
        chunks = [bytes(c) for c in f.iter_range(f.data_start, f.size, chunk_size=5)]
        assert b"".join(chunks) == data and max(map(len, chunks)) == 5
        with pytest.raises(ValueError):
            f.read_range(0, f.size + 1)
    assert f.closed
    with pytest.raises(ValueError):
        f.read_bytes("w")


def test_bool_non01_count(write):
    hdr = {"b": T("BOOL", [6], 0, 6)}
    with open_safetensors(write(st(hdr, bytes([0, 1, 2, 15, 1, 255])))) as f:
        assert f.bool_non01_count("b") == 3
        np.testing.assert_array_equal(f.read_array("b"), [0, 1, 1, 1, 1, 1])


# ---------------------------------------------------------------------------------------------------------
# real third-party files

_COUNT = re.compile(r"(\d+) tensors")


def _manifest_counts() -> dict[str, int]:
    root = real_fixtures_dir()
    manifest = json.loads((root / "MANIFEST.json").read_text())
    out = {}
    for entry in manifest["files"]:
        m = _COUNT.search(entry.get("reading", ""))
        if m:
            out[entry["file"]] = int(m.group(1))
    return out


def test_real_fixtures_open_and_match_manifest_and_reference():
    root = real_fixtures_dir()
    if not root.is_dir():
        pytest.skip("real fixtures not present")
    safe_open = pytest.importorskip("safetensors").safe_open
    counts = _manifest_counts()
    assert counts.get("catundchat-sd15.safetensors") == 256
    assert counts.get("lycoris-lokr-falcon4.safetensors") == 1750
    files = sorted(root.glob("*.safetensors"))
    assert files
    for path in files:
        with open_safetensors(path) as f:
            assert all(fd.code.startswith("LA15") for fd in f.findings), (path.name, f.findings)
            if path.name in counts:
                assert len(f.tensors) == counts[path.name], path.name
            # independent reference: the safetensors library sees the same names, dtypes, shapes, values
            with safe_open(str(path), "np") as ref:
                assert set(ref.keys()) == set(f.tensors)
                assert (ref.metadata() or None) == (f.metadata or None)
                for name in list(f.tensors)[:40]:
                    info = f.tensors[name]
                    if info.dtype in ("F32", "F16", "F64"):
                        np.testing.assert_array_equal(f.read_array(name), ref.get_tensor(name).astype(np.float64))
                    sl = ref.get_slice(name)
                    assert tuple(sl.get_shape()) == info.shape and sl.get_dtype() == info.dtype


# ---------------------------------------------------------------------------------------------------------
# speed and memory bounds


def _big_header(n_tensors: int) -> tuple[dict, bytes]:
    hdr = {"__metadata__": {"ss_network_dim": "4", "ss_tag_frequency": json.dumps({"a": {"x": 1}})}}
    off = 0
    for i in range(n_tensors):
        shape = [4, 320] if i % 2 else [320, 4]
        hdr[f"lora_unet_down_blocks_{i}_attentions_0_proj_in.lora_{'up' if i % 2 else 'down'}.weight"] = T(
            "F16", shape, off, off + 2560
        )
        off += 2560
    return hdr, bytes(off)


def test_2000_tensor_header_parses_fast(write):
    hdr, data = _big_header(2000)
    path = write(st(hdr, data))
    best = min(_timed(lambda: open_safetensors(path, probes=False).close()) for _ in range(7))
    # typically ~5 ms on one core; generous bound for slow CI machines
    assert best < 0.05, best
    with open_safetensors(path) as f:
        assert len(f.tensors) == 2000


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_100mb_file_answered_under_one_second(tmp_path):
    hdr = json.dumps({"w": T("U8", [99_000_000], 0, 99_000_000)}).encode()
    hdr += b" " * (-len(hdr) % 8)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hdr)) + hdr)
        fh.truncate(8 + len(hdr) + 99_000_000)  # sparse zeros
    t = time.perf_counter()
    with open_safetensors(path) as f:  # probes included: they scan the whole data region once
        assert f.tensors["w"].numel == 99_000_000
    assert time.perf_counter() - t < 1.0


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_declared_2_pow_40_tensor_allocates_nothing_big(write):
    path = write(st({"w": T("U8", [2**40], 0, 2**40)}, b"\x00" * 64))

    def run():
        with pytest.raises(AuditError) as ei:
            open_safetensors(path)
        assert ei.value.code == "LA118"

    assert _peak_during(run) < 1 << 20


def test_absurd_length_prefix_allocates_nothing_big(write):
    for n in (2**64 - 1, 2**63 + 5, 100_000_001, 17 * 2**20):
        path = write(struct.pack("<Q", n) + b'{"a":1}')

        def run():
            with pytest.raises(AuditError) as ei:
                open_safetensors(path)
            assert ei.value.code == "LA104"

        assert _peak_during(run) < 1 << 20


# ---------------------------------------------------------------------------------------------------------
# structure scan (depth/keys before json.loads)


def _ref_scan(data: bytes) -> tuple[int, int]:
    depth = max_depth = keys = 0
    inside = escaped = False
    for ch in data:
        if inside:
            if escaped:
                escaped = False
            elif ch == 0x5C:
                escaped = True
            elif ch == 0x22:
                inside = False
        elif ch == 0x22:
            inside = True
        elif ch in (0x7B, 0x5B):
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch in (0x7D, 0x5D):
            depth -= 1
        elif ch == 0x3A and depth == 1:
            keys += 1
    return max_depth, keys


def test_structure_scan_matches_reference_across_chunk_boundaries():
    rng = np.random.default_rng(1)
    pieces = ['\\', '"', "[", "]", "{", "}", ":", "a", "\\\\", '\\"']

    def rand_obj(d):
        r = rng.random()
        if d > 6 or r < 0.3:
            return "".join(rng.choice(pieces, size=rng.integers(0, 8)))
        if r < 0.6:
            return [rand_obj(d + 1) for _ in range(rng.integers(0, 4))]
        return {"".join(rng.choice(pieces, size=rng.integers(0, 5))) + str(i): rand_obj(d + 1)
                for i in range(rng.integers(0, 4))}

    for _ in range(150):
        raw = json.dumps(rand_obj(0)).encode()
        want = _ref_scan(raw)
        for chunk in (1, 2, 3, 7, 1 << 20):
            assert C._structure_scan(raw, 1000, chunk=chunk) == want, (raw, chunk)
    # backslash runs spanning chunks
    raw = json.dumps({"k": "\\" * 9 + '"' + "[[" + "\\" * 4, "z": [[1]]}).encode()
    for chunk in range(1, 12):
        assert C._structure_scan(raw, 1000, chunk=chunk) == _ref_scan(raw)


# ---------------------------------------------------------------------------------------------------------
# parse_nested_json


def test_parse_nested_json_ok_and_caps():
    assert parse_nested_json('{"a": {"b": [1, 2.5, "x"]}}') == {"a": {"b": [1, 2.5, "x"]}}
    assert parse_nested_json('["\\ud83d\\ude00"]') == ["\U0001f600"]
    deep = "[" * 100_000 + "]" * 100_000
    bad = [
        deep,  # depth
        "[" * 65 + "]" * 65,
        '{"a": 1, "a": 2}',  # duplicate
        '{"a": {"b": 1, "\\u0062": 2}}',  # escaped duplicate, nested
        "[NaN]",
        "[Infinity]",
        '["\\ud800"]',  # lone surrogate
        "[1,]",
        "x" * (2**20 + 1),  # size
        "{",
    ]
    for text in bad:
        with pytest.raises(AuditError) as ei:
            parse_nested_json(text)
        assert ei.value.code == "LA159", text[:30]
    assert parse_nested_json("[" * 64 + "]" * 64) is not None
    assert parse_nested_json("[" * 5 + "]" * 5, Limits(max_nested_json_depth=5)) is not None
    with pytest.raises(AuditError):
        parse_nested_json("[" * 6 + "]" * 6, Limits(max_nested_json_depth=5))
    with pytest.raises(AuditError):
        parse_nested_json(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# sniff


def test_sniff_kinds():
    assert sniff(b"") == "empty"
    assert sniff(pickle.dumps({"w": [1, 2, 3]}, protocol=2)) == "pickle (protocol 2)"
    assert sniff(pickle.dumps({"w": [1, 2, 3]}, protocol=4)) == "pickle (protocol 4)"
    assert sniff(pickle.dumps({"w": [1, 2, 3]}, protocol=0)) == "pickle (protocol 0)"
    assert sniff(pickle.dumps({"w": [1, 2, 3]}, protocol=1)) == "pickle (protocol 1)"
    assert sniff(b"PK\x03\x04" + b"\x00" * 40) == "zip"
    assert sniff(b'  {"a": [1, 2]}') == "json"
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20) == "png"
    assert sniff(b"\x1f\x8b\x08\x00") == "gzip"
    assert sniff(b"7z\xbc\xaf\x27\x1c\x00\x04") == "7z"
    assert sniff(b"hello world\n") == "text"
    assert sniff(st({"a": T("U8", [1], 0, 1)}, b"\x00")) == "safetensors"
    assert sniff(bytes([0xB8, 0xA3, 0x01, 0, 0, 0, 0, 0, 0x00, 0x13])) == "unknown"
    # a length prefix whose first bytes look like PROTO is not a pickle when the walk dies at once
    assert sniff(struct.pack("<Q", 0x0380) + b"\x00" * 32) == "unknown"
    assert C.describe_kind("zip") == "a zip archive" and C.describe_kind("pickle (protocol 2)") == "a pickle (protocol 2)"


# ---------------------------------------------------------------------------------------------------------
# the pickle probe on its own


def _probe_bytes(tmp_path, data: bytes):
    p = tmp_path / "probe.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        return C._pickle_probe(fd, len(data))
    finally:
        os.close(fd)


def test_pickle_probe_cases(tmp_path):
    hit = _probe_bytes(tmp_path, b"cbuiltins\nprint\n(VLORA_AUDIT_CANARY\ntR.")
    assert hit is not None and hit[1] == "GLOBAL" and hit[2] == "builtins.print"
    hit = _probe_bytes(tmp_path, pickle.dumps(len, protocol=4))  # STACK_GLOBAL 'builtins' 'len'
    assert hit is not None and hit[1] == "STACK_GLOBAL" and hit[2] == "builtins.len"
    hit = _probe_bytes(tmp_path, b"(S'x'\nios\nsystem\n.")
    assert hit is not None and hit[1] == "INST" and hit[2] == "os.system"
    # a long BINBYTES hop is stepped over without reading it
    hop = b"B" + struct.pack("<I", 3 << 20) + b"\x00" * (3 << 20) + b"0cbuiltins\nlen\n."
    hit = _probe_bytes(tmp_path, hop)
    assert hit is not None and hit[2] == "builtins.len"
    # harmless or broken programs
    for data in (
        b"N.",  # NONE STOP
        b"R" + b"\x00" * 20,  # REDUCE on an empty stack fails in CPython
        b"c\x01\x00{bad module\nname\n.",  # GLOBAL operands that cannot be imported
        b"\x80\x09N.",  # unsupported protocol
        b"\x82\x01.",  # extension code: unregistered in a plain interpreter
        b"\x80\x05\x97cbuiltins\nlen\n.",  # out-of-band buffer: pickle.load fails before the GLOBAL
    ):
        assert _probe_bytes(tmp_path, data) is None, data
    assert _probe_bytes(tmp_path, b"B\x03\x00\x00\x00abcB\x03\x00\x00\x00def\x93.") is None  # bytes, not str
    assert _probe_bytes(tmp_path, b"\x93.") is None  # stack underflow
    assert _probe_bytes(tmp_path, b"h\x05.") is None  # memo key never stored


def test_confusable_invisible_class_covers_all_format_characters():
    missing = [
        hex(cp) for cp in range(0x110000)
        if unicodedata.category(chr(cp)) == "Cf" and not C._INVISIBLE.match(chr(cp))
    ]
    assert missing == []
