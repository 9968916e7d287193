"""Hostile inputs for audit.container: security.md sections A-G, each built here in st()/T() notation
(st, T and F come from test_container.py).

Every case asserts the exact finding code. Bracketed ids ([29], [E5]...) are the sample names of security.md.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import socket
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_container import (  # T and st are imported from here by test_pipeline_hostile
    F,
    T,
    file_writer,
    st,
)

from audit.container import Limits, open_safetensors, parse_nested_json
from audit.errors import AuditError


def TJ(dt, shape, b, e) -> str:
    """T() as JSON text, for headers written by hand (duplicates cannot be built from a dict)."""
    return json.dumps(T(dt, shape, b, e))


CANARY_PICKLE = b"cbuiltins\nprint\n(VLORA_AUDIT_CANARY\ntR."  # never loaded


@pytest.fixture
def write(tmp_path):
    return file_writer(tmp_path, "case.safetensors")


def error_of(path, limits: Limits = Limits()) -> AuditError:
    with pytest.raises(AuditError) as ei:
        open_safetensors(path, limits)
    return ei.value


def finding(f, code: str):
    return next(x for x in f.findings if x.code == code)


def codes(f, alignment: bool = False) -> list[str]:
    """Finding codes; the st() notation does not pad headers, so LA154 (unaligned data) is left out."""
    return [x.code for x in f.findings if alignment or x.code != "LA154"]


# ---------------------------------------------------------------------------------------------------------
# B, C, D: one expected error code per case

CASES = [
    # B. framing
    ("B-01 7 bytes [11]", b"\x00" * 7, "LA102"),
    ("B-02 N=0 [12]", struct.pack("<Q", 0) + b"{}", "LA106"),
    ("B-03 N=1000 in 88 bytes [13]", struct.pack("<Q", 1000) + b"{}".ljust(80), "LA103"),
    ("B-04 N=100_000_001 [14]", struct.pack("<Q", 100_000_001) + b"{}" * 8, "LA104"),
    ("B-04 N=2**64-1 [15]", struct.pack("<Q", 2**64 - 1) + b"{}" * 8, "LA104"),
    ("B-04 N=-8 [16]", struct.pack("<q", -8) + b"{}" * 8, "LA104"),
    # C. JSON syntax / structure
    ("C-01 raw 0xff [20]", st(b'{"__metadata__":{"k":"\xff"}}'), "LA105"),
    ("C-02 { [21]", st(b"{"), "LA106"),
    ("C-02 [] [22]", st(b"[]"), "LA107"),
    ("C-02 string root [23]", st(b'"abc"'), "LA107"),
    ("C-03 BOM [26]", st(b"\xef\xbb\xbf{}"), "LA105"),
    ("C-03 space+BOM [E7]", st(b" \xef\xbb\xbf{}"), "LA105"),
    ("C-06 trailing comma [27]", st('{"w":' + TJ("F32", [4], 0, 16) + ",}", F), "LA106"),
    ("C-06 comment [28]", st("/*x*/{}"), "LA106"),
    ("C-06 NaN literal [E2]", st('{"__metadata__":{"k":NaN}}'), "LA106"),
    ("C-06 Infinity in shape", st('{"w":{"dtype":"F32","shape":[Infinity],"data_offsets":[0,16]}}', F), "LA106"),
    ("C-07 dup identical [29]", st('{"w":' + TJ("F32", [4], 0, 16) + ',"w":' + TJ("F32", [4], 0, 16) + "}", F), "LA108"),
    ("C-07 dup other dtype [30]", st('{"w":' + TJ("F32", [4], 0, 16) + ',"w":' + TJ("U8", [16], 0, 16) + "}", F), "LA108"),
    ("C-07 dup other ranges", st('{"w":' + TJ("F32", [4], 0, 16) + ',"w":' + TJ("F32", [4], 16, 32) + "}", F + F), "LA108"),
    ("C-07 escaped twin [E5]", st('{"w":' + TJ("F32", [4], 0, 16) + ',"\\u0077":' + TJ("F32", [4], 0, 16) + "}", F), "LA108"),
    ("C-08 dup __metadata__ [31]", st('{"__metadata__":{},"__metadata__":{}}'), "LA108"),
    ("C-08 escaped __metadata__ [E6]", st('{"__metadata__":{"a":"1"},"__metad\\u0061ta__":{"b":"2"}}'), "LA108"),
    ("C-08 dup key in metadata [32]", st('{"__metadata__":{"a":"1","a":"2"}}'), "LA108"),
    ("C-09 dup field in entry [33]", st('{"w":{"dtype":"F32","dtype":"U8","shape":[4],"data_offsets":[0,16]}}', F), "LA110"),
    ("C-10 5000-deep array [42]",
     st('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":' + "[" * 5000 + "]" * 5000 + "}}", F), "LA106"),
    ("C-10 65-deep object", st('{"__metadata__":{},"x":' + '{"a":' * 64 + "1" + "}" * 64 + "}"), "LA106"),
    ("C-11 lone surrogate [38]", st('{"__metadata__":{"k":"\\ud800"}}'), "LA106"),
    ("C-11 lone low surrogate in name", st('{"a\\udc00b":' + TJ("F32", [4], 0, 16) + "}", F), "LA106"),
    ("C-12 __metadata__ as tensor [95]", st({"__metadata__": T("F32", [1], 0, 4)}, b"\x00" * 4), "LA109"),
    ("C-12 metadata value int [34]", st('{"__metadata__":{"k":1}}'), "LA109"),
    ("C-12 metadata value object [35]", st('{"__metadata__":{"k":{"a":"b"}}}'), "LA109"),
    ("C-12 metadata is string [37]", st('{"__metadata__":"abc"}'), "LA109"),
    # D. dtype / shape / offsets
    ("D-01 f32 [50]", st({"w": T("f32", [4], 0, 16)}, F), "LA111"),
    ("D-01 F128 [51]", st({"w": T("F128", [1], 0, 16)}, F), "LA111"),
    ("D-01 dtype not a string", st({"w": {"dtype": 32, "shape": [4], "data_offsets": [0, 16]}}, F), "LA111"),
    ("D-03 F4 x3 in 2 bytes [56]", st({"w": T("F4", [3], 0, 2)}, b"\x00\x00"), "LA114"),
    ("D-03 F6 x3", st({"w": T("F6_E2M3", [3], 0, 3)}, b"\x00" * 3), "LA114"),
    ("D-04 shape [-1,4] [60]", st('{"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}', F), "LA112"),
    ("D-04 shape [2.0,2] [61]", st('{"w":{"dtype":"F32","shape":[2.0,2],"data_offsets":[0,16]}}', F), "LA112"),
    ("D-04 shape [\"2\",2] [62]", st('{"w":{"dtype":"F32","shape":["2",2],"data_offsets":[0,16]}}', F), "LA112"),
    ("D-04 shape [true] [E0]", st('{"w":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"\x00"), "LA112"),
    ("D-04 shape [-0] [E3]", st('{"w":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}'), "LA112"),
    ("D-04 shape [1e400] [69]", st('{"w":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}}', b"\x00"), "LA112"),
    ("D-04 shape [2**64] [68]", st('{"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', b"\x00"), "LA112"),
    ("D-04 shape not a list", st('{"w":{"dtype":"U8","shape":4,"data_offsets":[0,4]}}', b"\x00" * 4), "LA112"),
    ("D-05 [2, 2**64-2] [63]", st({"w": T("U8", [2, 2**64 - 2], 0, 16)}, F), "LA113"),
    ("D-05 [2**62, 2**62, 0] [65]", st({"w": T("U8", [2**62, 2**62, 0], 0, 0)}), "LA113"),
    ("D-05 bits overflow", st({"w": T("F64", [2**62], 0, 16)}, F), "LA113"),
    ("D-07 rank 10001 [66]", st({"w": T("U8", [1] * 10001, 0, 1)}, b"\x00"), "LA124"),
    ("D-07 rank 9", st({"w": T("U8", [1] * 9, 0, 1)}, b"\x00"), "LA124"),
    ("D-08 reversed [70]", st({"w": T("F32", [4], 16, 0)}, F), "LA115"),
    ("D-08 overlap [71]", st({"a": T("F32", [4], 0, 16), "b": T("F32", [4], 0, 16)}, F), "LA115"),
    ("D-08 partial overlap [72]", st({"a": T("F32", [4], 0, 16), "b": T("F32", [4], 8, 24)}, F + F[:8]), "LA115"),
    ("D-08 gap [73]", st({"a": T("F32", [4], 0, 16), "b": T("F32", [4], 20, 36)}, F + b"\x00" * 4 + F), "LA115"),
    ("D-08 first begin not 0 [74]", st({"a": T("F32", [4], 4, 20)}, b"\x00" * 4 + F), "LA115"),
    ("D-09 three offsets [78]", st({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 32]}}, F + F), "LA110"),
    ("D-09 one offset [79]", st({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16]}}, F), "LA110"),
    ("D-09 negative offset [80]", st({"w": T("F32", [4], -16, 0)}, F), "LA115"),
    ("D-09 float offset [E4]", st('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1e0]}}', b"\x00"), "LA110"),
    ("D-09 bool offsets [E1]", st('{"w":{"dtype":"U8","shape":[1],"data_offsets":[false,true]}}', b"\x00"), "LA110"),
    ("D-09 offsets not a list", st('{"w":{"dtype":"U8","shape":[1],"data_offsets":"0-1"}}', b"\x00"), "LA110"),
    ("D-09 offset 2**64", st({"w": T("U8", [0], 2**64, 2**64)}), "LA115"),
    ("D-10 F32[2,2] in 12 bytes [81]", st({"w": T("F32", [2, 2], 0, 12)}, F[:12]), "LA116"),
    ("D-11 trailing bytes [75]", st({"w": T("F32", [4], 0, 16)}, F + b"\x00" * 4), "LA117"),
    ("D-11 HTML tail [C3]", st({"w": T("F32", [4], 0, 16)}, F + b"<html><body>hi</body></html>"), "LA117"),
    ("D-12 truncated data [76]", st({"w": T("F32", [4], 0, 16)}, F[:8]), "LA118"),
    ("D-12 offsets past EOF [77]", st({"a": T("F32", [4], 0, 16), "b": T("F32", [4], 16, 32)}, F), "LA118"),
    ("D-13 missing dtype [44]", st({"w": {"shape": [4], "data_offsets": [0, 16]}}, F), "LA110"),
    ("D-13 missing data_offsets [45]", st({"w": {"dtype": "F32", "shape": [4]}}, F), "LA110"),
    ("D-13 missing shape", st({"w": {"dtype": "F32", "data_offsets": [0, 16]}}, F), "LA110"),
    ("D-13 entry is an array [46]", st({"w": ["F32", [4], [0, 16]]}, F), "LA110"),
    ("D-13 entry is null", st({"w": None}), "LA110"),
    # E. names
    ("E-01 1 MB name [92]", st({"n" * 1_000_000: T("U8", [1], 0, 1)}, b"\x00"), "LA121"),
]


@pytest.mark.parametrize("label, content, code", CASES, ids=[c[0] for c in CASES])
def test_case_gives_exact_code(write, label, content, code):
    err = error_of(write(content))
    assert err.code == code, (label, err)
    assert err.message and "\n" not in err.message


def test_b05_header_above_configurable_cap_names_cap(tmp_path):
    p = tmp_path / "b05.safetensors"
    n = 17 * 2**20
    with open(p, "wb") as fh:
        fh.write(struct.pack("<Q", n))
        fh.truncate(8 + n + 16)  # sparse
    err = error_of(p)
    assert err.code == "LA104" and "16777216" in err.message and "max_header_bytes" in err.message
    # raising the cap moves past the cap check (the zero-filled header is then rejected as NUL padding)
    err = error_of(p, Limits(max_header_bytes=32 * 2**20))
    assert err.code == "LA106" and "NUL" in err.message
    # the format's own 100 MB maximum cannot be raised
    big = tmp_path / "b05b.safetensors"
    with open(big, "wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001))
        fh.truncate(8 + 100_000_001)
    assert error_of(big, Limits(max_header_bytes=2**30)).code == "LA104"


def test_b03_message_names_sizes(write):
    err = error_of(write(struct.pack("<Q", 1000) + b"{}".ljust(80)))
    assert "1000" in err.message and "88" in err.message


def test_b06_length_cuts_multibyte_char(write):
    hdr = json.dumps({"__metadata__": {"k": "\u00e9t\u00e9"}}, ensure_ascii=False).encode()
    cut = hdr.index("\u00e9".encode()) + 1  # inside the 2-byte sequence
    raw = struct.pack("<Q", cut) + hdr[:cut] + hdr[cut:]
    assert error_of(write(raw)).code == "LA105"


def test_c01_utf8_error_gives_offset(write):
    err = error_of(write(st(b'{"__metadata__":{"k":"\xff"}}')))
    assert "byte 22" in err.message


def test_c04_trailing_nul_padding_named_explicitly(write):
    err = error_of(write(st(b"{}" + b"\x00" * 6)))
    assert err.code == "LA106" and "NUL" in err.message and "padding" in err.message


def test_c05_leading_whitespace_accepted_with_warning(write):
    with open_safetensors(write(st(b"\n\t {}"))) as f:
        assert f.tensors == {} and codes(f) == ["LA150"]
    with open_safetensors(write(st(b"{}   "))) as f:  # trailing space padding is canonical
        assert codes(f) == []


def test_c07_duplicate_message_names_tensor(write):
    err = error_of(write(st('{"w":' + TJ("F32", [4], 0, 16) + ',"w":' + TJ("U8", [16], 0, 16) + "}", F)))
    assert "'w'" in err.message and "twice" in err.message


def test_c10_deep_nesting_in_metadata_string_is_a_warning(write):
    deep = "[" * 200_000 + "]" * 200_000
    with open_safetensors(write(st({"__metadata__": {"ss_tag_frequency": deep}}))) as f:
        assert codes(f) == ["LA159"]
        with pytest.raises(AuditError) as ei:
            parse_nested_json(f.metadata["ss_tag_frequency"])
        assert ei.value.code == "LA159"


def test_c11_valid_surrogate_pair_is_fine(write):
    with open_safetensors(write(st('{"__metadata__":{"k":"\\ud83d\\ude00"}}'))) as f:
        assert f.metadata == {"k": "\U0001f600"}


def test_c12_metadata_null_is_info(write):
    with open_safetensors(write(st({"__metadata__": None, "w": T("F32", [4], 0, 16)}, F))) as f:
        assert f.metadata is None and codes(f) == ["LA152"]
        assert [x.severity for x in f.findings] == ["info"]


def test_d01_message_lists_accepted_set(write):
    err = error_of(write(st({"w": T("f32", [4], 0, 16)}, F)))
    assert "'f32'" in err.message
    for name in ("BF16", "F8_E4M3FNUZ", "F4", "C64", "BOOL"):
        assert name in err.message


def test_d02_exotic_dtypes_structurally_ok_and_decoded(write):
    torch = pytest.importorskip("torch")
    vals = torch.tensor([0.5, -1.0, 3.0, 448.0])
    pieces = {
        "bf16": ("BF16", vals.to(torch.bfloat16).view(torch.uint8).numpy().tobytes()),
        "e4m3": ("F8_E4M3", vals.to(torch.float8_e4m3fn).view(torch.uint8).numpy().tobytes()),
        "e5m2": ("F8_E5M2", vals.to(torch.float8_e5m2).view(torch.uint8).numpy().tobytes()),
        "e8m0": ("F8_E8M0", bytes([126, 127, 128, 255])),
        "fnuz": ("F8_E4M3FNUZ", bytes([0x40, 0xC0, 0x80, 0x00])),
        "f4": ("F4", bytes([0x21, 0xF7])),
        "c64": ("C64", np.array([1 + 2j, 3 - 4j, 0, 0], dtype=np.complex64).tobytes()),
        "f6": ("F6_E3M2", bytes(3)),
    }
    hdr, data = {}, b""
    for name, (dt, raw) in pieces.items():
        n = 4
        hdr[name] = T(dt, [n], len(data), len(data) + len(raw))
        data += raw
    with open_safetensors(write(st(hdr, data))) as f:
        assert {n: i.dtype for n, i in f.tensors.items()} == {k: v[0] for k, v in pieces.items()}
        np.testing.assert_array_equal(f.read_array("bf16"), [0.5, -1.0, 3.0, 448.0])
        np.testing.assert_array_equal(f.read_array("e4m3"), [0.5, -1.0, 3.0, 448.0])
        np.testing.assert_array_equal(f.read_array("e5m2"), vals.to(torch.float8_e5m2).double().numpy())
        e8 = f.read_array("e8m0")
        assert list(e8[:3]) == [0.5, 1.0, 2.0] and np.isnan(e8[3])
        fnuz = f.read_array("fnuz")
        assert fnuz[0] == 1.0 and fnuz[1] == -1.0 and np.isnan(fnuz[2]) and fnuz[3] == 0.0
        np.testing.assert_array_equal(f.read_array("f4"), [0.5, 1.0, 6.0, -6.0])
        for name in ("c64", "f6"):
            with pytest.raises(AuditError) as ei:
                f.read_array(name)
            assert ei.value.code == "LA163"


def test_d06_zero_element_huge_dims_accepted_with_warning(write):
    with open_safetensors(write(st({"w": T("F32", [0, 2**62, 2**62], 0, 0)}))) as f:
        assert codes(f) == ["LA155"] and f.tensors["w"].numel == 0
        with pytest.raises(AuditError) as ei:
            f.read_array("w")  # numpy cannot represent the shape; coded, never a ValueError
        assert ei.value.code == "LA155"
    with open_safetensors(write(st({"w": T("F32", [0, 4], 0, 0)}))) as f:
        assert codes(f) == [] and f.read_array("w").shape == (0, 4)


def test_d08_offset_message_names_tensor_and_expected_begin(write):
    err = error_of(write(st({"a": T("F32", [4], 0, 16), "b": T("F32", [4], 20, 36)}, F + b"\x00" * 4 + F)))
    assert "'b'" in err.message and "expected 16" in err.message


def test_d10_size_mismatch_message(write):
    err = error_of(write(st({"w": T("F32", [2, 2], 0, 12)}, F[:12])))
    assert "16" in err.message and "12" in err.message


def test_d11_tail_is_described(write):
    err = error_of(write(st({"w": T("F32", [4], 0, 16)}, F + b"<html><body>hi</body></html>")))
    assert "text" in err.message and f"{len(b'<html><body>hi</body></html>')} trailing bytes" in err.message


def test_d14_extra_field_accepted_with_warning(write):
    entry = dict(T("F32", [4], 0, 16), evil="x")
    with open_safetensors(write(st({"w": entry}, F))) as f:
        assert codes(f) == ["LA151"] and "evil" in finding(f, "LA151").message


def test_d15_valid_variants(write):
    with open_safetensors(write(st({"b": T("F32", [4], 16, 32), "a": T("F32", [4], 0, 16)}, F + F))) as f:
        assert list(f.tensors) == ["b", "a"] and codes(f) == []
        np.testing.assert_array_equal(f.read_array("a"), np.arange(4.0))
    with open_safetensors(write(st({"s": T("F32", [], 0, 4)}, F[4:8]))) as f:
        a = f.read_array("s")
        assert a.shape == () and float(a) == 1.0
    with open_safetensors(write(st(b"{}"))) as f:
        assert f.tensors == {} and f.metadata is None and f.size == 10
    with open_safetensors(write(st({"__metadata__": {"format": "pt"}}))) as f:
        assert f.tensors == {} and f.metadata == {"format": "pt"}


def test_d16_unaligned_data_is_info(write):
    hdr = json.dumps({"w": T("F32", [4], 0, 16)}).encode()
    if (8 + len(hdr)) % 4 == 0:
        hdr += b" "
    with open_safetensors(write(st(hdr, F))) as f:
        assert codes(f, alignment=True) == ["LA154"] and f.findings[0].severity == "info"
        np.testing.assert_array_equal(f.read_array("w"), np.arange(4.0))  # unaligned reads still work


# ---------------------------------------------------------------------------------------------------------
# E. names and metadata content


def test_e01_empty_and_pathlike_names(write):
    hdr = {"": T("U8", [1], 0, 1), "../../etc/passwd": T("U8", [1], 1, 2), "C:\\x": T("U8", [1], 2, 3),
           "a/b.weight": T("U8", [1], 3, 4), "unet:0:up": T("U8", [1], 4, 5)}
    with open_safetensors(write(st(hdr, b"\x00" * 5))) as f:
        assert codes(f) == ["LA156", "LA156", "LA156"]
        assert "../../etc/passwd" in f.findings[1].message and "C:" in f.findings[2].message


def test_e01_name_cap_is_configurable(write):
    name = "x" * 5000
    path = write(st({name: T("U8", [1], 0, 1)}, b"\x00"))
    assert error_of(path).code == "LA121"
    with open_safetensors(path, Limits(max_name_bytes=8192)) as f:
        assert list(f.tensors) == [name]
    # the cap counts UTF-8 bytes, not characters
    wide = "\u00e9" * 2100  # 4200 bytes
    assert error_of(write(st({wide: T("U8", [1], 0, 1)}, b"\x00"))).code == "LA121"


def test_e02_confusable_names(write):
    base = "lora_unet_a.lora_down.weight"
    hdr = {base: T("U8", [1], 0, 1), base.replace("_a", "_\u200ba"): T("U8", [1], 1, 2)}
    with open_safetensors(write(st(hdr, b"\x00\x00"))) as f:
        assert codes(f) == ["LA157"]
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    with open_safetensors(write(st({nfc: T("U8", [1], 0, 1), nfd: T("U8", [1], 1, 2)}, b"\x00\x00"))) as f:
        assert codes(f) == ["LA157"]
    with open_safetensors(write(st({"\uff41": T("U8", [1], 0, 1), "a": T("U8", [1], 1, 2)}, b"\x00\x00"))) as f:
        assert codes(f) == ["LA157"]  # NFKC folds the full-width letter
    with open_safetensors(write(st({"caf\u00e9": T("U8", [1], 0, 1), "cafe": T("U8", [1], 1, 2)}, b"\x00\x00"))) as f:
        assert codes(f) == []


def test_e02_confusable_check_is_linear(write):
    # 20 000 non-ASCII names: a quadratic comparison would take minutes
    hdr = {f"n\u00e9_{i}": T("U8", [0], 0, 0) for i in range(20_000)}
    import time

    path = write(st(hdr))
    t = time.perf_counter()
    with open_safetensors(path) as f:
        assert len(f.tensors) == 20_000 and codes(f) == []
    assert time.perf_counter() - t < 5


def test_e03_control_and_bidi_characters(write):
    meta = {"ss_comment": "\x1b[2J\x1b[31mPWNED\x07", "nul": "a\x00b", "bidi": "abc\u202etxt.exe", "ok": "multi\nline\ttext"}
    with open_safetensors(write(st({"__metadata__": meta, "w\x1b[31m": T("U8", [1], 0, 1)}, b"\x00"))) as f:
        found = [(x.code, x.where) for x in f.findings]
        assert sorted(c for c, _ in found) == ["LA153"] * 4
        # the message escapes what it quotes
        for x in f.findings:
            assert "\x1b" not in x.message and "\u202e" not in x.message and "\x00" not in x.message
        assert f.metadata["ss_comment"] == "\x1b[2J\x1b[31mPWNED\x07"  # data itself is kept as is


def test_e04_suspicious_text_is_only_data(write):
    meta = {"a": "<script>alert(1)</script>", "b": "import os; os.system('id')", "c": "https://example.invalid/x"}
    with open_safetensors(write(st({"__metadata__": meta}))) as f:
        assert f.metadata == meta and codes(f) == []


def test_e05_tag_frequency_deep_nesting(write):
    meta = {"ss_tag_frequency": "[" * 100_000 + "]" * 100_000, "ss_network_args": '{"algo": "lokr"}'}
    with open_safetensors(write(st({"__metadata__": meta}))) as f:
        assert codes(f) == ["LA159"] and "ss_tag_frequency" in finding(f, "LA159").message
        with pytest.raises(AuditError) as ei:
            parse_nested_json(f.metadata["ss_tag_frequency"])
        assert ei.value.code == "LA159"
        assert parse_nested_json(f.metadata["ss_network_args"]) == {"algo": "lokr"}


def test_e06_50mb_metadata_value(tmp_path):
    p = tmp_path / "e06.safetensors"
    p.write_bytes(st(b'{"__metadata__":{"k":"' + b"a" * 50_000_000 + b'"}}'))
    err = error_of(p)
    assert err.code == "LA104"
    tracemalloc.start()
    try:
        with open_safetensors(p, Limits(max_header_bytes=64 * 2**20)) as f:
            assert len(f.metadata["k"]) == 50_000_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 260_000_000  # bytes + text + parsed string, plus bounded scan chunks


def test_e08_bool_bytes_other_than_0_1(write):
    with open_safetensors(write(st({"b": T("BOOL", [16], 0, 16)}, bytes(range(16))))) as f:
        assert f.bool_non01_count("b") == 14


def test_f01_tensor_count_cap_before_building_objects(write):
    n = 100_001
    body = ",".join(f'"t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}' for i in range(n))
    path = write(st("{" + body + "}"))
    tracemalloc.start()
    try:
        err = error_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.code == "LA119" and "100000" in err.message
    # header bytes + decoded text + scan chunks; parsing 100k entries would need far more
    assert peak < 40_000_000
    with open_safetensors(path, Limits(max_tensors=200_000)) as f:
        assert len(f.tensors) == n


# ---------------------------------------------------------------------------------------------------------
# G. format confusion and polyglots


def test_g01_pickle_named_safetensors_is_disguised(write):
    data = pickle.dumps({"w": [1, 2, 3]})
    err = error_of(write(data, "model.safetensors"))
    assert err.code == "LA125" and "pickle (protocol" in err.message
    err = error_of(write(pickle.dumps({"w": [1, 2, 3]}, protocol=2), "model.pt"))
    assert err.code == "LA120" and "content is a pickle (protocol 2)" in err.message
    err = error_of(write(pickle.dumps({"w": [1, 2, 3]}, protocol=0), "old.SAFETENSORS"))
    assert err.code == "LA125" and "protocol 0" in err.message


def _torch_style_zip(payload: bytes = CANARY_PICKLE) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\x00" * 64)
    return buf.getvalue()


def test_g02_torch_zip_named_safetensors_is_disguised(write):
    err = error_of(write(_torch_style_zip(), "lora.safetensors"))
    assert err.code == "LA125" and "archive/data.pkl" in err.message
    err = error_of(write(_torch_style_zip(), "model.zip"))
    assert err.code == "LA120" and "zip archive" in err.message
    # a zip without a pickle inside is only "not safetensors"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hi")
    assert error_of(write(buf.getvalue(), "x.safetensors")).code == "LA120"


def test_g03_zip_inside_last_tensor(write):
    zb = _torch_style_zip()
    hdr = {"w": T("F32", [4], 0, 16), "z": T("U8", [len(zb)], 16, 16 + len(zb))}
    path = write(st(hdr, F + zb))
    assert zipfile.is_zipfile(path)  # independent oracle: Python's zip reader accepts the file
    with open_safetensors(path) as f:
        assert codes(f) == ["LA161"]
        hit = finding(f, "LA161")
        assert hit.severity == "critical" and "archive/data.pkl" in hit.message and "'z'" in hit.message


def test_g03_zip_inside_a_middle_tensor(write):
    zb = _torch_style_zip()
    big = np.zeros(20_000, dtype=np.float32).tobytes()  # pushes the zip out of the EOCD search window
    hdr = {"z": T("U8", [len(zb)], 0, len(zb)), "w": T("F32", [20_000], len(zb), len(zb) + len(big))}
    path = write(st(hdr, zb + big))
    assert not zipfile.is_zipfile(path)
    with open_safetensors(path) as f:
        assert codes(f) == ["LA161"] and "local file header" in finding(f, "LA161").message


def test_probes_can_be_skipped(write):
    zb = _torch_style_zip()
    path = write(st({"z": T("U8", [len(zb)], 0, len(zb))}, zb))
    with open_safetensors(path, probes=False) as f:
        assert codes(f) == []


def _pickle_polyglot() -> bytes:
    """A valid safetensors file that is also a pickle program calling builtins.print (security.md G-04).

    The length prefix N has low byte 0x42 (BINBYTES): the unpickler reads a 4-byte length L = N >> 8 and skips
    to header index L - 3, which lies in a metadata string holding a chain of 'C' (SHORT_BINBYTES) hops whose
    last hop lands exactly on the data section: a U8 tensor holding POPs and the GLOBAL/REDUCE payload.
    """
    prefix = '{"__metadata__":{"k":"'
    for L in range(25, 2000):
        N = 256 * L + 0x42
        j0 = L - 3
        if j0 < len(prefix) + 2:
            continue
        dist = N - j0
        h_last = (dist - 2) % 128
        k = (dist - 2 - h_last) // 128  # hops of 126 bytes before the last one
        pushes = 1 + k + 1
        payload = b"0" * pushes + CANARY_PICKLE
        suffix = '"},"t":' + json.dumps(T("U8", [len(payload)], 0, len(payload))) + "}"
        if not (len(suffix) + 2 <= h_last <= 126 and h_last not in (0x22, 0x5C)):
            continue
        s_len = N - len(prefix) - len(suffix)
        chars = ["x"] * s_len
        j = j0
        for _ in range(k):
            chars[j - len(prefix)] = "C"
            chars[j - len(prefix) + 1] = chr(126)
            j += 128
        chars[j - len(prefix)] = "C"
        chars[j - len(prefix) + 1] = chr(h_last)
        assert j + 2 + h_last == N
        header = (prefix + "".join(chars) + suffix).encode()
        assert len(header) == N
        return struct.pack("<Q", N) + header + payload
    raise AssertionError("no layout found")


def test_g04_safetensors_pickle_polyglot(write):
    raw = _pickle_polyglot()
    path = write(raw)
    # independent oracles, neither executes anything: the reference library accepts the file ...
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(path), "np") as ref:
        assert list(ref.keys()) == ["t"]
    # ... and the stdlib disassembler walks it as a complete, stack-consistent pickle that imports print
    listing = io.StringIO()
    pickletools.dis(io.BytesIO(raw), out=listing)
    assert "GLOBAL     'builtins print'" in listing.getvalue() and "REDUCE" in listing.getvalue()
    with open_safetensors(path) as f:
        assert codes(f) == ["LA162"]
        hit = finding(f, "LA162")
        assert hit.severity == "critical" and "builtins.print" in hit.message


def test_g05_png_named_pt(write):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
    err = error_of(write(png, "bad_pytorch.pt"))
    assert err.code == "LA120" and "PNG image" in err.message


def _padded_to(n: int, entry_len: int = 4) -> bytes:
    hdr = json.dumps({"t": T("U8", [entry_len], 0, entry_len)}).encode()
    return struct.pack("<Q", n) + hdr.ljust(n) + b"\x00" * entry_len


def test_g06_length_prefix_decoding_as_harmless_opcodes(write):
    raw = _padded_to(0x2E4E)  # bytes 'N' '.' = NONE, STOP
    assert raw[:2] == b"N."
    with open_safetensors(write(raw)) as f:
        assert codes(f) == []
    raw = _padded_to(0x152)  # 'R' = REDUCE on an empty stack
    assert raw[:1] == b"R"
    with open_safetensors(write(raw)) as f:
        assert codes(f) == []
    # 'c' = GLOBAL reading two lines of a pretty-printed header: not importable names, not flagged
    hdr = json.dumps({"t": T("U8", [4], 0, 4)}, indent=1).encode()
    n = 0x163
    raw = struct.pack("<Q", n) + hdr.ljust(n) + b"\x00" * 4
    assert raw[:1] == b"c" and raw.count(b"\n") >= 2
    with open_safetensors(write(raw)) as f:
        assert codes(f) == []


def test_not_safetensors_content_described(write):
    assert "JSON text" in error_of(write(b'{"model": "x", "weights": [1, 2, 3]}', "config.json")).message
    assert error_of(write(b'{"model": "x", "weights": [1, 2, 3]}', "config.json")).code == "LA120"
    rng = np.random.default_rng(7)
    err = error_of(write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "noise.safetensors"))
    assert err.code in ("LA103", "LA104")
    err = error_of(write(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 40, "malicious1.7z"))
    assert err.code == "LA120" and "7z" in err.message


# ---------------------------------------------------------------------------------------------------------
# A. filesystem


def test_a01_fifo_returns_immediately(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    code = (
        "import sys\n"
        "from audit.container import open_safetensors\n"
        "from audit.errors import AuditError\n"
        "try:\n"
        "    open_safetensors(sys.argv[1])\n"
        "except AuditError as e:\n"
        "    print(e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "LA100", out.stderr


def test_a02_symlinks_are_not_followed(tmp_path, write):
    target = write(st({"w": T("F32", [4], 0, 16)}, F), "real.safetensors")
    for name, dest in (("l1.safetensors", target), ("l2.safetensors", "/dev/zero"), ("l3.safetensors", tmp_path / "nope")):
        link = tmp_path / name
        os.symlink(dest, link)
        err = error_of(link)
        assert err.code == "LA100" and "symlink" in err.message


def test_a03_directory_socket_device(tmp_path):
    d = tmp_path / "evil.safetensors"
    d.mkdir()
    assert error_of(d).code == "LA100"
    assert error_of("/dev/zero").code == "LA100"
    sock_path = tmp_path / "s.safetensors"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(sock_path))
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        assert error_of(sock_path).code == "LA100"
    finally:
        s.close()


def test_a04_truncated_after_open(tmp_path):
    p = tmp_path / "a04.safetensors"
    data = np.arange(1 << 20, dtype=np.float32).tobytes()  # 4 MiB
    p.write_bytes(st({"w": T("F32", [1 << 20], 0, len(data))}, data))
    with open_safetensors(p) as f:
        os.truncate(p, 64)
        with pytest.raises(AuditError) as ei:
            f.read_bytes("w")
        assert ei.value.code in ("LA118", "LA122")
        with pytest.raises(AuditError) as ei:
            f.read_array("w")
        assert ei.value.code in ("LA118", "LA122")


def test_a05_growth_after_open(tmp_path):
    p = tmp_path / "a05.safetensors"
    p.write_bytes(st({"w": T("F32", [4], 0, 16)}, F))
    with open_safetensors(p) as f:
        np.testing.assert_array_equal(f.read_array("w"), np.arange(4.0))
        with open(p, "ab") as fh:
            fh.write(b"more")
        with pytest.raises(AuditError) as ei:
            f.read_bytes("w")
        assert ei.value.code == "LA122"


def test_a06_empty_file(write):
    err = error_of(write(b""))
    assert err.code == "LA102" and "empty file" in err.message


def test_a10_missing_and_unreadable(tmp_path, write):
    assert error_of(tmp_path / "missing.safetensors").code == "LA101"
    if os.geteuid() == 0:
        return  # root reads through chmod 000
    p = write(st(b"{}"), "locked.safetensors")
    p.chmod(0)
    try:
        assert error_of(p).code == "LA101"
    finally:
        p.chmod(0o600)


def test_no_polyglot_false_positives_over_length_prefixes(write):
    """Every low byte of N (each a different first pickle opcode) on ordinary headers, compact and indented."""
    rng = np.random.default_rng(0)
    hdr = {
        "__metadata__": {"ss_network_dim": "4", "ss_tag_frequency": json.dumps({"a": {"tag cos": 3, "x\ny": 1}})},
        "lora_unet_a.lora_down.weight": T("F16", [4, 8], 0, 64),
        "lora_unet_a.alpha": T("F32", [], 64, 68),
    }
    for indent in (None, 1):
        base = json.dumps(hdr, indent=indent).encode()
        start = len(base) + (-len(base) % 256)
        for n in range(start, start + 256):
            data = rng.standard_normal(34).astype(np.float16).tobytes()
            with open_safetensors(write(struct.pack("<Q", n) + base.ljust(n) + data)) as f:
                assert not {"LA161", "LA162"} & set(codes(f)), (n, f.findings)


def test_torch_checkpoints_named_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    new = tmp_path / "new.safetensors"
    torch.save({"w": torch.zeros(2)}, new)
    err = error_of(new)
    assert err.code == "LA125" and "data.pkl" in err.message
    old = tmp_path / "old.safetensors"
    torch.save({"w": torch.zeros(2)}, old, _use_new_zipfile_serialization=False)
    err = error_of(old)
    assert err.code == "LA125" and "legacy torch checkpoint" in err.message
    renamed = tmp_path / "old.ckpt"
    old.rename(renamed)
    assert error_of(renamed).code == "LA120"


def test_findings_are_capped_per_code_and_where_is_the_raw_name(write):
    hdr = {f"/abs/{i}": T("U8", [1], i, i + 1) for i in range(50)}
    with open_safetensors(write(st(hdr, bytes(50)))) as f:
        la156 = [x for x in f.findings if x.code == "LA156"]
        assert len(la156) == 21 and "30 more" in la156[-1].message
        assert la156[0].where == "/abs/0"


def test_g03_zip_search_fed_by_the_hash_pass_finds_the_same_header(write):
    """open_safetensors(zip_scan=False) leaves the local-header search to the hash pass; fed in chunks of any
    size, including chunks that split the signature, it reports exactly what the standalone probe reports."""
    from audit import hashes

    zb = _torch_style_zip()
    big = np.zeros(20_000, dtype=np.float32).tobytes()
    hdr = {"w": T("F32", [3], 0, 12), "z": T("U8", [len(zb)], 12, 12 + len(zb)),
           "v": T("F32", [20_000], 12 + len(zb), 12 + len(zb) + len(big))}
    path = write(st(hdr, np.ones(3, np.float32).tobytes() + zb + big))
    with open_safetensors(path) as f:
        want = finding(f, "LA161")
        others = [c for c in codes(f) if c != "LA161"]
        signature_at = f.data_start + 12
    for chunk in (1, 2, 3, 5, 7, 64, 4096, 1 << 20):
        with open_safetensors(path, zip_scan=False) as f:
            assert codes(f) == others and f.zip_scan is not None
            full = hashes.compute(f, threads=1, chunk_size=chunk)
            got = f.zip_scan.finding()
        assert got is not None and got.message == want.message and got.where == want.where, chunk
        assert full == hashes.compute_path(path, threads=1)
        assert f"at byte {signature_at}" in got.message
    # an end-of-central-directory record answers at open: nothing is left pending
    tail = write(st({"w": T("F32", [4], 0, 16), "z": T("U8", [len(zb)], 16, 16 + len(zb))}, F + zb))
    with open_safetensors(tail, zip_scan=False) as f:
        assert codes(f) == ["LA161"] and f.zip_scan is None


def test_g03_zip_signature_that_is_not_a_header_is_not_reported(write):
    fake = b"PK\x03\x04" + b"\xff" * 60  # the signature without a parseable header
    path = write(st({"z": T("U8", [len(fake)], 0, len(fake))}, fake))
    with open_safetensors(path, zip_scan=False) as f:
        from audit import hashes

        hashes.compute(f, threads=1, chunk_size=3)
        assert f.zip_scan.finding() is None
    with open_safetensors(path) as f:
        assert codes(f) == []
