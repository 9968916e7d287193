"""audit.hashes: Civitai-compatible hashes against independent references, and the embedded-hash check.

References: the Civitai scanner's published "hello world" vectors (civitai/model-scanner,
orchestrator/ModelScannerTests/HashTaskTests.cs), and hashlib / zlib / blake3 run here over the file's bytes
as read with ``Path.read_bytes`` and sliced by hand (the length prefix parsed with ``struct``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from blake3 import blake3
from conftest import real_fixtures_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import hashes as H
from audit.container import open_safetensors
from audit.errors import AuditError
from audit.record import Hashes

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---------------------------------------------------------------------------------------------------------
# helpers


def write_st(path: Path, sizes: list[int], *, metadata: dict | None = None, header_len_odd: bool | None = None,
             seed: int = 0) -> Path:
    """A safetensors file of U8 tensors with random bytes; the JSON header is padded with spaces so that its
    length is odd (``header_len_odd=True``), even (False) or left as it is (None)."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    for i, n in enumerate(sizes):
        header[f"t{i}"] = {"dtype": "U8", "shape": [n], "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    if header_len_odd is not None and (len(raw) % 2 == 1) != header_len_odd:
        raw += b" "
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + _random(off, seed))
    return path


def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def reference(path: Path, *, safetensors: bool = True) -> dict:
    """Every hash computed directly from the whole file's bytes."""
    b = path.read_bytes()
    sha = hashlib.sha256(b).hexdigest().upper()
    ref = {
        "sha256": sha,
        "autov2": sha[:10],
        "blake3": blake3(b).hexdigest().upper(),
        "crc32": struct.pack("<I", zlib.crc32(b)).hex().upper(),
        "autov1": (hashlib.sha256(b[0x100000:0x110000]).hexdigest()[:8].upper() if len(b) >= 0x200000 else None),
    }
    if safetensors:
        (n,) = struct.unpack("<Q", b[:8])
        ref["autov3"] = hashlib.sha256(b[8 + n:]).hexdigest().upper()
        ref["data_offset"] = 8 + n
    return ref


def as_dict(h: Hashes) -> dict:
    return {k: getattr(h, k) for k in ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "data_offset")}


def hashes_with(autov3: str | None) -> Hashes:
    return Hashes(sha256="0" * 64, autov1=None, autov2="0" * 10, autov3=autov3, blake3="0" * 64, crc32="0" * 8,
                  data_offset=100 if autov3 else None)


# ---------------------------------------------------------------------------------------------------------
# the scanner's own vectors


def test_scanner_hello_world_vectors(tmp_path):
    p = tmp_path / "dummy.txt"
    p.write_bytes(b"hello world")
    for threads in (1, 2):
        h = H.compute_path(p, threads=threads)
        assert h.crc32 == "85114A0D"
        assert h.sha256 == "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
        assert h.autov2 == "B94D27B993"
        assert h.blake3 == "D74981EFA70A0C880B8D8C1985D075DBCBF679B99A5F9914E5AAF96B831A9E24"
        assert h.autov1 is None
        # b"hello wo" read as a u64 length prefix is far beyond the file: no tensor data to hash
        assert h.autov3 is None and h.data_offset is None


def test_crc32_byte_order_is_little_endian():
    # the conventional CRC-32 of "hello world" is 0x0D4A1185; the scanner writes its bytes little-endian
    assert zlib.crc32(b"hello world") == 0x0D4A1185


def test_empty_file(tmp_path):
    p = tmp_path / "empty.bin"
    p.write_bytes(b"")
    h = H.compute_path(p)
    assert h.sha256 == EMPTY.upper() and h.crc32 == "00000000" and h.autov1 is None and h.autov3 is None
    assert h.blake3 == blake3(b"").hexdigest().upper()


# ---------------------------------------------------------------------------------------------------------
# safetensors files against references


@pytest.mark.parametrize("threads", [1, 2, None])
def test_small_file_matches_references(tmp_path, threads):
    p = write_st(tmp_path / "small.safetensors", [1000, 33333, 77], metadata={"ss_x": "1"})
    ref = reference(p)
    assert ref["autov1"] is None and p.stat().st_size < 0x200000
    with open_safetensors(p) as sf:
        assert as_dict(H.compute(sf, threads=threads, chunk_size=4096)) == ref
        assert as_dict(H.compute(sf, threads=threads)) == ref
    assert as_dict(H.compute_path(p, threads=threads)) == ref


@pytest.mark.parametrize("threads", [1, 2, None])
@pytest.mark.parametrize("chunk_size", [H.CHUNK_SIZE, 1 << 20, 0x10000, 0x8001, 0xFFFFD, 3 << 20])
def test_large_file_matches_references(tmp_path_factory, threads, chunk_size):
    d = tmp_path_factory.mktemp("large")
    p = write_st(d / "large.safetensors", [0x180000, 0x100001, 12345], header_len_odd=True, seed=1)
    ref = reference(p)
    assert p.stat().st_size >= 0x200000 and ref["autov1"] is not None
    with open_safetensors(p, probes=False) as sf:
        assert as_dict(H.compute(sf, threads=threads, chunk_size=chunk_size)) == ref
    assert as_dict(H.compute_path(p, threads=threads, chunk_size=chunk_size)) == ref


def test_autov1_threshold_is_exactly_two_mib(tmp_path):
    # the scanner: files shorter than 0x200000 bytes have no AutoV1; a file of exactly 0x200000 has one
    for total, expect in ((0x200000 - 1, False), (0x200000, True)):
        p = tmp_path / f"f{total}.bin"
        p.write_bytes(_random(total, total))
        h = H.compute_path(p, chunk_size=0x30000)
        assert (h.autov1 is not None) is expect
        if expect:
            assert h.autov1 == hashlib.sha256(p.read_bytes()[0x100000:0x110000]).hexdigest()[:8].upper()


@pytest.mark.parametrize("odd", [True, False])
def test_chunk_boundaries_around_the_data_start(tmp_path, odd):
    p = write_st(tmp_path / "b.safetensors", [301, 0, 4096, 17], metadata={"k": "v" * 37}, header_len_odd=odd)
    ref = reference(p)
    data_start = ref["data_offset"]
    assert (data_start - 8) % 2 == (1 if odd else 0)
    sizes = {1, 2, 3, 7, 8, 9, 64, data_start - 1, data_start, data_start + 1, data_start + 4095,
             p.stat().st_size - 1, p.stat().st_size, p.stat().st_size + 1}
    with open_safetensors(p) as sf:
        for cs in sorted(sizes):
            for threads in (1, 2):
                assert as_dict(H.compute(sf, threads=threads, chunk_size=cs)) == ref, (cs, threads)


def test_empty_data_region(tmp_path):
    p = write_st(tmp_path / "zero.safetensors", [0, 0], metadata={"a": "b"})
    with open_safetensors(p) as sf:
        h = H.compute(sf)
    assert h.autov3 == EMPTY.upper() and h.data_offset == p.stat().st_size
    assert as_dict(h) == reference(p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=0, max_size=3000), n=st.integers(0, 4000), chunk=st.integers(1, 700),
       threads=st.sampled_from([1, 2]))
def test_generic_files_any_prefix_any_chunk(tmp_path, body, n, chunk, threads):
    p = tmp_path / "g.bin"
    content = struct.pack("<Q", n) + body
    p.write_bytes(content)
    h = H.compute_path(p, threads=threads, chunk_size=chunk)
    ref = reference(p, safetensors=False)
    assert {k: v for k, v in as_dict(h).items() if k in ref} == ref
    if n <= len(body):
        assert h.data_offset == 8 + n
        assert h.autov3 == hashlib.sha256(body[n:]).hexdigest().upper()
    else:
        assert h.autov3 is None and h.data_offset is None


def test_short_generic_file_has_no_autov3(tmp_path):
    p = tmp_path / "seven.bin"
    p.write_bytes(b"\x00" * 7)
    assert H.compute_path(p).autov3 is None


def test_invalid_threads(tmp_path):
    p = write_st(tmp_path / "t.safetensors", [10])
    with open_safetensors(p) as sf, pytest.raises(ValueError):
        H.compute(sf, threads=3)


# ---------------------------------------------------------------------------------------------------------
# the bytes hashed are the bytes validated


def test_hashes_the_opened_inode_not_the_path(tmp_path):
    p = write_st(tmp_path / "a.safetensors", [5000], seed=3)
    ref = reference(p)
    with open_safetensors(p) as sf:
        other = write_st(tmp_path / "b.safetensors", [5000], seed=4)
        os.replace(other, p)  # the path now names a different file; the open one is unchanged
        assert as_dict(H.compute(sf)) == ref
    assert H.compute_path(p).sha256 != ref["sha256"]


def _bump_mtime(p: Path) -> None:
    st_ = p.stat()
    os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("threads", [1, 2])
def test_modified_in_place_between_open_and_hash(tmp_path, threads):
    p = write_st(tmp_path / "m.safetensors", [0x30000], seed=5)
    with open_safetensors(p) as sf:
        with open(p, "r+b") as f:
            f.seek(sf.data_start + 10)
            f.write(b"\xff\xfe")
        _bump_mtime(p)
        with pytest.raises(AuditError) as ei:
            H.compute(sf, threads=threads, chunk_size=0x8000)
    assert ei.value.code == "LA122"


@pytest.mark.parametrize("threads", [1, 2])
def test_truncated_between_open_and_hash(tmp_path, threads):
    p = write_st(tmp_path / "t.safetensors", [0x30000], seed=6)
    with open_safetensors(p) as sf:
        os.truncate(p, sf.data_start + 100)
        with pytest.raises(AuditError) as ei:
            H.compute(sf, threads=threads, chunk_size=0x8000)
    assert ei.value.code == "LA122"


def test_appended_between_open_and_hash(tmp_path):
    p = write_st(tmp_path / "g.safetensors", [1000], seed=7)
    with open_safetensors(p) as sf:
        with open(p, "ab") as f:
            f.write(b"tail")
        with pytest.raises(AuditError) as ei:
            H.compute(sf)
    assert ei.value.code == "LA122"


def test_compute_path_refuses_what_is_not_a_regular_file(tmp_path):
    target = write_st(tmp_path / "x.safetensors", [10])
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for p in (link, fifo, tmp_path):
        with pytest.raises(AuditError) as ei:
            H.compute_path(p)
        assert ei.value.code == "LA100"
    with pytest.raises(AuditError) as ei:
        H.compute_path(tmp_path / "missing")
    assert ei.value.code == "LA101"


# ---------------------------------------------------------------------------------------------------------
# real files


def _manifest() -> list[dict]:
    d = real_fixtures_dir()
    if not (d / "MANIFEST.json").is_file():
        pytest.skip("real fixtures absent")
    return json.loads((d / "MANIFEST.json").read_text())["files"]


def test_real_files_match_manifest_and_references():
    d = real_fixtures_dir()
    for entry in _manifest():
        p = d / entry["file"]
        with open_safetensors(p) as sf:
            h = H.compute(sf)
        assert h.sha256 == entry["sha256"].upper(), entry["file"]
        assert as_dict(h) == reference(p), entry["file"]


def test_real_kohya_files_embedded_hash_matches_autov3():
    d = real_fixtures_dir()
    seen = 0
    for entry in _manifest():
        with open_safetensors(d / entry["file"]) as sf:
            if not (sf.metadata and "sshs_model_hash" in sf.metadata):
                continue
            checks, found = H.check_embedded(sf.metadata, H.compute(sf))
        seen += 1
        by_field = {c.field: c for c in checks}
        assert by_field["sshs_model_hash"].verdict == "match", entry["file"]
        assert by_field["sshs_legacy_hash"].verdict == "unverifiable"
        assert found == []
        assert {c.field for c in checks} == {"sshs_model_hash", "sshs_legacy_hash"}  # ss_*_model_hash unread
    if seen == 0:
        pytest.skip("no real file carries sshs_model_hash")


# ---------------------------------------------------------------------------------------------------------
# check_embedded

GOOD = hashlib.sha256(b"tensor data").hexdigest()
GOOD_UPPER = GOOD.upper()


def check(metadata, autov3: str | None = GOOD_UPPER):
    return H.check_embedded(metadata, hashes_with(autov3))


@pytest.mark.parametrize("metadata", [None, {}, {"ss_network_dim": "4"}])
def test_no_embedded_hash(metadata):
    assert check(metadata) == ([], [])


@pytest.mark.parametrize("value", [GOOD, GOOD.upper(), GOOD[:20] + GOOD[20:].upper()])
def test_match_any_case(value):
    checks, found = check({"sshs_model_hash": value})
    assert [(c.field, c.value, c.against, c.verdict) for c in checks] == [("sshs_model_hash", value, "autov3", "match")]
    assert found == []


@pytest.mark.parametrize("value", ["0x" + GOOD, "0X" + GOOD.upper(), "0x" + GOOD.upper()])
def test_sshs_model_hash_with_prefix(value):
    checks, found = check({"sshs_model_hash": value})
    assert checks[0].verdict == "match-with-prefix"
    assert [(f.code, f.severity, f.where) for f in found] == [("LA308", "info", "__metadata__.sshs_model_hash")]


@pytest.mark.parametrize("value", ["0x" + GOOD, GOOD, "0X" + GOOD.upper()])
def test_modelspec_prefix_is_its_canonical_form(value):
    checks, found = check({"modelspec.hash_sha256": value})
    assert checks[0].verdict == "match" and found == []


@pytest.mark.parametrize("key", ["sshs_model_hash", "modelspec.hash_sha256"])
def test_mismatch(key):
    other = hashlib.sha256(b"other").hexdigest()
    checks, found = check({key: other})
    assert checks[0].verdict == "mismatch"
    assert [(f.code, f.severity) for f in found] == [("LA306", "warning")]
    assert other in found[0].message and GOOD.upper()[:12] in found[0].message
    # a one-digit difference is a mismatch too
    flipped = ("0" if GOOD[-1] != "0" else "1")
    assert check({key: GOOD[:-1] + flipped})[0][0].verdict == "mismatch"


@pytest.mark.parametrize("key,value", [("sshs_model_hash", EMPTY), ("sshs_model_hash", EMPTY.upper()),
                                       ("modelspec.hash_sha256", "0x" + EMPTY)])
def test_placeholder(key, value):
    checks, found = check({key: value})
    assert checks[0].verdict == "placeholder"
    assert [f.code for f in found] == ["LA307"]


def test_empty_tensor_data_really_hashes_to_the_placeholder():
    # a file with no tensor bytes: the empty-input SHA-256 is then the true AutoV3, not a placeholder
    checks, found = check({"sshs_model_hash": EMPTY}, autov3=EMPTY.upper())
    assert checks[0].verdict == "match" and found == []


@pytest.mark.parametrize("value", ["", "abc", GOOD[:-1], GOOD + "0", "0x" + GOOD[:-1], GOOD[:-1] + "g",
                                   " " + GOOD[1:], "0x" + GOOD + "0", "\uff10" * 64, "0x0x" + GOOD[:62],
                                   GOOD[:63] + "\u0661"])
def test_malformed(value):
    checks, found = check({"sshs_model_hash": value})
    assert checks[0].verdict == "malformed"
    assert [f.code for f in found] == ["LA306"] and "malformed" in found[0].message


def test_hostile_value_is_bounded_and_escaped():
    value = "\x1b[31m" + "A" * 5_000_000
    checks, found = check({"modelspec.hash_sha256": value})
    assert checks[0].verdict == "malformed" and len(checks[0].value) <= 128
    assert len(found[0].message) < 250 and "\x1b" not in found[0].message and "5000005 chars" in found[0].message
    bidi = "\u202e" + GOOD[1:]
    checks, found = check({"sshs_model_hash": bidi})
    assert checks[0].verdict == "malformed" and "\u202e" not in found[0].message


def test_legacy_hash_recorded_unverifiable_and_training_hashes_ignored():
    md = {"sshs_legacy_hash": "81b44117", "ss_sd_model_hash": "5386e8fb",
          "ss_new_sd_model_hash": hashlib.sha256(b"base").hexdigest()}
    checks, found = check(md)
    assert [(c.field, c.value, c.verdict) for c in checks] == [("sshs_legacy_hash", "81b44117", "unverifiable")]
    assert found == []


def test_both_keys_in_fixed_order():
    md = {"modelspec.hash_sha256": "0x" + GOOD, "sshs_legacy_hash": "zz", "sshs_model_hash": EMPTY}
    checks, found = check(md)
    assert [(c.field, c.verdict) for c in checks] == [
        ("sshs_model_hash", "placeholder"), ("modelspec.hash_sha256", "match"), ("sshs_legacy_hash", "unverifiable")]
    assert [f.code for f in found] == ["LA307"]


def test_no_autov3_means_unverifiable():
    checks, found = check({"sshs_model_hash": GOOD}, autov3=None)
    assert checks[0].verdict == "unverifiable" and found == []


def test_memory_stays_at_one_chunk(tmp_path):
    import tracemalloc

    p = write_st(tmp_path / "mem.safetensors", [6 << 20], seed=8)
    with open_safetensors(p, probes=False) as sf:
        tracemalloc.start()
        try:
            H.compute(sf, threads=2, chunk_size=1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < (1 << 20) + (256 << 10)


# ---------------------------------------------------------------------------------------------------------
# check_stated (hashes a sidecar states, e.g. Civitai's .civitai.info)


def _against(field: str) -> str | None:
    last = field.replace(":", ".").rsplit(".", 1)[-1].lower()
    return last if last in ("sha256", "autov1", "autov2", "autov3", "blake3", "crc32") else None


@pytest.fixture(scope="module")
def small_file_hashes(tmp_path_factory):
    p = write_st(tmp_path_factory.mktemp("stated") / "s.safetensors", [4000, 999], seed=9)
    return H.compute_path(p), reference(p)


def civitai(i: int, **kw) -> list[tuple[str, str]]:
    return [(f".civitai.info:files[{i}].hashes.{k}", v) for k, v in kw.items()]


def test_stated_keeps_the_matching_file_entry(small_file_hashes):
    h, ref = small_file_hashes
    stated = civitai(0, SHA256=ref["sha256"], AutoV1="0A1B2C3D", AutoV2=ref["autov2"].lower(), CRC32=ref["crc32"],
                     BLAKE3=ref["blake3"], AutoV3=ref["autov3"][:12]) + \
        civitai(1, SHA256=hashlib.sha256(b"the training data zip").hexdigest())
    checks, found = H.check_stated(stated, h, _against)
    assert [(c.against, c.verdict) for c in checks] == [
        ("sha256", "match"), ("autov1", "unverifiable"), ("autov2", "match"), ("crc32", "match"),
        ("blake3", "match"), ("autov3", "match")]
    assert all("files[0]" in c.field for c in checks) and found == []


def test_stated_no_listed_file_matches(small_file_hashes):
    h, ref = small_file_hashes
    other = hashlib.sha256(b"another file").hexdigest().upper()
    stated = civitai(0, SHA256=other, AutoV2=other[:10]) + civitai(1, SHA256=EMPTY)
    checks, found = H.check_stated(stated, h, _against)
    assert [c.verdict for c in checks] == ["mismatch"] * 3
    assert [(f.code, f.where) for f in found] == [("LA313", ".civitai.info")]
    assert "none of the 2 files" in found[0].message and ref["sha256"][:12] in found[0].message


def test_stated_mismatch_inside_the_matching_entry(small_file_hashes):
    h, ref = small_file_hashes
    wrong_b3 = blake3(b"not this file").hexdigest().upper()
    checks, found = H.check_stated(civitai(0, SHA256=ref["sha256"], BLAKE3=wrong_b3), h, _against)
    assert [c.verdict for c in checks] == ["match", "mismatch"]
    assert [f.code for f in found] == ["LA313"] and "BLAKE3" in found[0].message and wrong_b3 in found[0].message


@pytest.mark.parametrize("value,verdict", [("x", "malformed"), ("AB" * 10, "malformed"), ("Z" * 12, "malformed"),
                                           ("0x" + "A" * 10, "malformed")])
def test_stated_malformed_autov3(small_file_hashes, value, verdict):
    h, ref = small_file_hashes
    checks, found = H.check_stated(civitai(0, SHA256=ref["sha256"], AutoV3=value), h, _against)
    assert [c.verdict for c in checks] == ["match", verdict]
    assert [f.code for f in found] == ["LA313"] and "malformed" in found[0].message


def test_stated_autov3_prefix_and_full(small_file_hashes):
    h, ref = small_file_hashes
    for value, verdict in ((ref["autov3"][:12].lower(), "match"), (ref["autov3"], "match"),
                           (ref["autov3"][:11] + ("0" if ref["autov3"][11] != "0" else "1"), "mismatch"),
                           (ref["autov3"][:13], "malformed")):
        checks, _ = H.check_stated([(".metadata.json:civitai.files[0].hashes.AutoV3", value)], h, _against)
        assert checks[0].verdict == verdict, value


def test_stated_metadata_json_sha256(small_file_hashes):
    h, ref = small_file_hashes
    assert H.check_stated([(".metadata.json:sha256", ref["sha256"].lower())], h, _against)[1] == []
    checks, found = H.check_stated([(".metadata.json:sha256", EMPTY)], h, _against)
    assert checks[0].verdict == "mismatch"
    assert [(f.code, f.where) for f in found] == [("LA313", ".metadata.json:sha256")]


def test_stated_unknown_fields_skipped_and_no_autov3(small_file_hashes):
    h, _ = small_file_hashes
    assert H.check_stated([(".civitai.info:files[0].hashes.md5", "00" * 16)], h, _against) == ([], [])
    p_hashes = hashes_with(None)
    checks, found = H.check_stated(civitai(0, AutoV3="AB" * 6), p_hashes, _against)
    assert checks[0].verdict == "unverifiable" and found == []
