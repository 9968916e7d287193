"""Benchmark `lora-audit inspect` (a script, not a timed test). Prints one table of ratios measured in one run.

    python3 bench/inspect.py [--out DIR] [--repeat N] [--device cpu|cuda]

Builds two files with audit.corpus:
  * FLUX.1 rank-16 LoRA over all linear layers of the transformer (diffusers-peft names, bf16)
  * SDXL kohya rank-32 LoRA over the UNet attention blocks and both text encoders (fp16)
and measures
  (a) the whole `lora-audit inspect --json` process over `sha256sum` of the same file, both timed as whole
      processes the way a user runs them (best of N, page cache warm for both);
  (b) our spectra against the dense method (rebuild ΔW = up @ down in float64, then svdvals) on a sample of
      layers: speed-up and the largest relative difference of the top singular values;
  (c) the peak resident memory of the inspect process against the largest single tensor.
"""

from __future__ import annotations

import os
import sys

# This file is named like the stdlib module `inspect`; keep its folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# one BLAS thread, as the lora-audit CLI runs (see cli.py): both methods in (b) are timed on one core
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import corpus, spectra  # noqa: E402
from audit.analyse import Options, inspect_file  # noqa: E402
from audit.container import open_safetensors  # noqa: E402

CASES = [
    ("flux1-peft-r16-bf16", dict(family="flux1", fmt="diffusers-peft", rank=16, dtype="BF16",
                                 targets="all-linear", text_encoders=False)),
    ("sdxl-kohya-r32-fp16", dict(family="sdxl", fmt="kohya", rank=32, dtype="F16", targets="attn",
                                 text_encoders=True)),
]


# The children may cache their bytecode, as an installed lora-audit does: with PYTHONDONTWRITEBYTECODE set (some
# containers set it) every run would compile lora-audit's modules from source again, about 0.07 s.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_process(argv: list[str], repeat: int) -> tuple[float, int]:
    """Best wall time over `repeat` runs (after one untimed run), and the peak RSS (KiB) of the child across them."""
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CHILD_ENV)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
        best = min(best, time.perf_counter() - t)
        if r.returncode not in (0, 1):
            raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def peak_rss_of(argv: list[str]) -> int:
    """Peak RSS (KiB) of one inspect process: its own VmHWM, read as it exits (argv runs cli.main)."""
    code = ("import atexit, sys, cli\n"
            "atexit.register(lambda: print([l.split()[1] for l in open('/proc/self/status')"
            " if l.startswith('VmHWM')][0], file=sys.stderr))\n"
            "cli.main(sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1])


def dense_vs_ours(path: Path, sample: int, backend: spectra.Backend) -> tuple[float, float, float, int]:
    """(dense seconds, our seconds, max relative difference of top singular values, layers) on a sample."""
    rec = inspect_file(path, Options(device="cpu", spectrum=False))
    lora = [l for l in rec.layers if l.kind == "lora"]
    step = max(1, len(lora) // sample)
    chosen = lora[::step][:sample]
    pairs = []
    with open_safetensors(path) as sf:
        for l in chosen:
            up_name = next(n for n in l.tensors if "lora_B" in n or "lora_up" in n)
            down_name = next(n for n in l.tensors if "lora_A" in n or "lora_down" in n)
            up, down = sf.read_array(up_name), sf.read_array(down_name)
            pairs.append((up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1), l.scale))

    t = time.perf_counter()
    dense_sv = [np.linalg.svd(s * (u @ d), compute_uv=False) for u, d, s in pairs]
    t_dense = time.perf_counter() - t

    t = time.perf_counter()
    ours = spectra.singular_values([spectra.LowRank(u, d) for u, d, _ in pairs], backend)
    ours = [sv * abs(s) for sv, (_, _, s) in zip(ours, pairs)]
    t_ours = time.perf_counter() - t

    worst = 0.0
    for a, b in zip(ours, dense_sv):
        worst = max(worst, float(np.max(np.abs(a - b[: a.size]) / b[0])))
    return t_dense, t_ours, worst, len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lora-audit-bench")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sample", type=int, default=16, help="layers in the dense comparison")
    ap.add_argument("--device", default="cpu", help="device for the spectra engine in (b) and for inspect")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lora_audit = [sys.executable, "-c", "import cli; cli.main()"]
    backend = spectra.Backend(spectra.resolve_device(args.device))

    rows = []
    for name, kw in CASES:
        path = out / f"{name}.safetensors"
        if not path.exists():
            corpus.write(path, corpus.build(**kw))
        size = path.stat().st_size
        with open_safetensors(path, probes=False) as sf:
            n_tensors = len(sf.tensors)
            largest = max(t.end - t.start for t in sf.tensors.values())
            largest_f64 = max(t.numel for t in sf.tensors.values()) * 8
        inspect_argv = [*lora_audit, "inspect", str(path), "--json", "--device", args.device, "--fail-on", "never"]
        # warm the page cache for both, then time whole processes
        subprocess.run(["sha256sum", str(path)], stdout=subprocess.DEVNULL, check=True)
        t_sha, _ = timed_process(["sha256sum", str(path)], args.repeat)
        t_ours, _ = timed_process(inspect_argv, args.repeat)
        rss_kib = peak_rss_of(inspect_argv[3:])
        rec = json.loads(subprocess.run(inspect_argv, capture_output=True, text=True, check=True).stdout)
        t_dense, t_spec, worst, n = dense_vs_ours(path, args.sample, backend)
        rows.append(dict(
            file=name, size_mb=size / 1e6, tensors=n_tensors, layers=len(rec["layers"]),
            t_sha=t_sha, t_ours=t_ours, ratio=t_ours / t_sha,
            dense=t_dense, spec=t_spec, speedup=t_dense / t_spec, worst=worst, n=n,
            rss_mb=rss_kib / 1024, largest_mb=largest / 2**20, largest_f64_mb=largest_f64 / 2**20,
            cap_mb=2 * largest / 2**20 + 200,
        ))

    print(f"lora-audit inspect benchmark — device {backend.name}, best of {args.repeat}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu(s)")
    head = ("file", "MB", "layers", "sha256sum s", "inspect s", "(a) ratio", "dense s", "ours s",
            "(b) speed-up", "(b) max rel diff", "(c) peak RSS MB", "largest tensor MB", "(c) cap MB")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([
            r["file"], f"{r['size_mb']:.1f}", str(r["layers"]), f"{r['t_sha']:.3f}", f"{r['t_ours']:.3f}",
            f"{r['ratio']:.2f}", f"{r['dense']:.3f}", f"{r['spec']:.4f}", f"{r['speedup']:.0f}x",
            f"{r['worst']:.1e}", f"{r['rss_mb']:.0f}", f"{r['largest_mb']:.2f}", f"{r['cap_mb']:.0f}",
        ]))
    print("targets: (a) <= 2.0, (b) >= 100x and <= 1e-4, (c) peak RSS < 2 x largest tensor + 200 MB")
    print(f"(b) sample: {rows[0]['n']} / {rows[1]['n']} layers")


if __name__ == "__main__":
    main()
