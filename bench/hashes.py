"""Benchmark audit.hashes (a script, not a timed test). Prints one table of ratios measured in one run.

    python3 bench/hashes.py [PATH] [--out DIR] [--size-mb N] [--repeat N]

Without PATH it writes a safetensors file of about 300 MB (random F16 tensors, kohya-like metadata) to DIR and
uses that. With the page cache warm it times, best of N:
  * ``sha256sum`` (and ``b3sum`` when installed) as whole processes, the way a user runs them;
  * separate passes, one per digest (how the Civitai scanner computes them), in this process;
  * ``audit.hashes.compute`` on one thread and on two threads, in this process (file already opened, as
    ``inspect`` does), each giving all six hashes;
and prints each time and its ratio over ``sha256sum``. The hashes of every variant are checked against each
other and against the tools' output before the table is printed.
"""

from __future__ import annotations

import os
import sys

# keep this folder off the import path (bench/inspect.py would shadow the stdlib module)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# one BLAS thread, as the lora-audit CLI runs (see cli.py)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from blake3 import blake3  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import hashes  # noqa: E402
from audit.container import Limits, open_safetensors  # noqa: E402


def write_file(path: Path, size_mb: int) -> None:
    """A kohya-like LoRA file of about ``size_mb`` MB: F16 up/down pairs of random bytes, written in pieces."""
    rank, width = 64, 3072
    pair = 2 * rank * width * 2  # bytes of one up + down pair
    n_pairs = max(1, size_mb * 10**6 // pair)
    header: dict = {"__metadata__": {"ss_network_dim": str(rank), "ss_network_alpha": "32", "ss_output_name": "bench"}}
    off = 0
    for i in range(n_pairs):
        for part, shape in (("lora_up", [width, rank]), ("lora_down", [rank, width])):
            header[f"lora_unet_block_{i}.{part}.weight"] = {"dtype": "F16", "shape": shape,
                                                           "data_offsets": [off, off + pair // 2]}
            off += pair // 2
    raw = json.dumps(header, separators=(",", ":")).encode()
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        left = off
        while left:
            n = min(left, 16 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n


def best(fn, repeat: int):
    """(best wall time, last result) over ``repeat`` calls."""
    t_best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


def tool(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0].upper()


def separate_passes(path: Path, data_start: int) -> tuple[str, str, str, str]:
    """One read of the file per digest, 4 MiB at a time: SHA-256, tensor-data SHA-256, BLAKE3, CRC32."""
    def each(update, start=0):
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            while chunk := f.read(hashes.CHUNK_SIZE):
                update(chunk)

    sha, data, b3 = hashlib.sha256(), hashlib.sha256(), blake3()
    crc = [0]
    each(sha.update)
    each(data.update, data_start)
    each(b3.update)
    each(lambda c: crc.__setitem__(0, zlib.crc32(c, crc[0])))
    return (sha.hexdigest().upper(), data.hexdigest().upper(), b3.hexdigest().upper(),
            crc[0].to_bytes(4, "little").hex().upper())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", help="a safetensors file to hash (default: write one)")
    ap.add_argument("--out", default="/tmp/lora-audit-bench")
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if args.path:
        path = Path(args.path)
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"hashes-{args.size_mb}mb.safetensors"
        if not path.exists():
            write_file(path, args.size_mb)
    size = path.stat().st_size

    load_before = os.getloadavg()[0]
    subprocess.run(["sha256sum", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    rows = []
    t, sha_tool = best(lambda: tool(["sha256sum", str(path)]), args.repeat)
    rows.append(("sha256sum (SHA-256 only)", t))
    b3_tool = None
    if shutil.which("b3sum"):
        t, b3_tool = best(lambda: tool(["b3sum", str(path)]), args.repeat)
        rows.append(("b3sum (BLAKE3 only)", t))

    limits = Limits(max_file_bytes=max(Limits().max_file_bytes, size))
    with open_safetensors(path, limits, probes=False) as sf:
        t, sep = best(lambda: separate_passes(path, sf.data_start), args.repeat)
        rows.append(("separate passes, one per digest", t))
        results = {}
        for threads in (1, 2):
            t, results[threads] = best(lambda n=threads: hashes.compute(sf, threads=n), args.repeat)
            rows.append((f"audit.hashes.compute, {threads} thread{'s' if threads > 1 else ''}", t))

    h = results[2]
    if results[1] != h or (h.sha256, h.autov3, h.blake3, h.crc32) != sep or h.sha256 != sha_tool:
        raise SystemExit(f"hash disagreement: {results} {sep} {sha_tool}")
    if b3_tool is not None and h.blake3 != b3_tool:
        raise SystemExit(f"BLAKE3 disagreement: {h.blake3} vs b3sum {b3_tool}")

    print(f"audit.hashes benchmark — {path.name}, {size / 1e6:.1f} MB, best of {args.repeat}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s); b3sum "
          f"{'installed' if b3_tool else 'not installed'}; 1-min load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (other work on the CPUs skews the 2-thread row most)")
    print("compute gives SHA256, AutoV1, AutoV2, AutoV3, BLAKE3 and CRC32 from one read")
    base = rows[0][1]
    print("what | seconds | MB/s | ratio over sha256sum")
    for name, t in rows:
        print(" | ".join((name, f"{t:.3f}", f"{size / 1e6 / t:.0f}", f"{t / base:.2f}")))
    print(f"2 threads over 1 thread: {rows[-2][1] / rows[-1][1]:.2f}x faster")


if __name__ == "__main__":
    main()
