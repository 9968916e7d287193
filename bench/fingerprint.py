"""Benchmark the base-model fingerprint's cost inside `inspect` (a script, not a timed test).

    python3 bench/fingerprint.py [--out DIR] [--repeat N]

Builds a FLUX.1 kohya LoRA (rank 16, bf16, every linear layer of the transformer: 942 keys) with
audit.corpus, then times `lora-audit inspect --json` on it as a user runs it (a whole process, so the
first read of the rules files counts) with the fingerprint on and off (`--no-fingerprint`), alternating the
two so that both see the same cache and machine state, and prints the best time of each and their ratio;
then the fingerprint stage's own time inside one process once the rules are loaded. Everything else
(hashes, spectra, claims) runs in both.
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py is named like the stdlib module `inspect`; keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import corpus, fingerprint  # noqa: E402
from audit.analyse import Options, inspect_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the generated file (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="lora-audit-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flux1-kohya-r16-bf16.safetensors"
    synth = corpus.build("flux1", "kohya", rank=16, dtype="BF16", targets="all-linear", text_encoders=False,
                         metadata={"ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora"})
    corpus.write(path, synth)
    keys = len(synth.tensors)

    cmd = [sys.executable, "-c", "import cli; cli.main()", "inspect", str(path), "--json"]
    for argv in (cmd, cmd + ["--no-fingerprint"]):  # warm the page cache and the interpreter's own caches
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeat):
        for on in (True, False):
            t = time.perf_counter()
            r = subprocess.run(cmd if on else cmd + ["--no-fingerprint"], capture_output=True, text=True)
            best[on] = min(best[on], time.perf_counter() - t)
            if r.returncode not in (0, 1):
                raise SystemExit(r.stderr[-2000:])
    fingerprint.load_rules()
    stage = float("inf")
    for _ in range(args.repeat):
        rec = inspect_file(path, Options(hashes=False))
        stage = min(stage, rec.timing["fingerprint"])
    family = rec.fingerprint.family, rec.fingerprint.confidence

    size = path.stat().st_size
    print(f"file: {path.name}  {size / 2**20:.1f} MiB  {keys} keys   fingerprint: {family[0]} ({family[1]})")
    print(f"{'case':<28}{'best of ' + str(args.repeat):>14}")
    print(f"{'inspect, fingerprint off':<28}{best[False]:>12.3f} s")
    print(f"{'inspect, fingerprint on':<28}{best[True]:>12.3f} s")
    print(f"{'fingerprint stage (warm)':<28}{stage * 1000:>11.1f} ms")
    print(f"ratio on/off: {best[True] / best[False]:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
