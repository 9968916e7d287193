"""Benchmark the HTML report of a batch (a script, not a timed test). Prints one table measured in one run.

    python3 bench/report.py [--count 500] [--dir DIR] [--jobs 2] [--keep] [--browser chromium]

1. Writes ``count`` synthetic adapters with ``bench/scan.py --generate-only`` (the same mix of families, key
   formats, adapter kinds and metadata as the scan benchmark; 1-20 MB each), or reuses the files in ``--dir``
   when its manifest.json is there.
2. Runs ``lora-audit report DIR -o report.html`` (every shipped policy, a fresh cache) and times it.
3. Opens the report in headless Chromium several times and reports, best of the runs:
   * the page's own timing, read back from the DOM: ``data-ready-ms`` (the report's script ran at the end of
     the body: everything parsed) and ``data-load-ms`` (the load event), both ``performance.now()`` since
     navigation start;
   * the wall time of a whole ``chromium --screenshot`` process (start, load, layout and paint of the first
     screen), against the same process on an empty page, so the difference is what the report itself costs.
   Targets: the report opens in under 2 s (load event) and the file stays under 5 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_LOAD_S = 2.0
TARGET_MB = 5.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--disable-sync", "--disable-component-update",
         "--hide-scrollbars", "--window-size=1280,1600"]


def browser_run(browser: str, url: str, *extra: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as profile:
        t = time.perf_counter()
        r = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                           capture_output=True, text=True, timeout=120)
        return time.perf_counter() - t, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--dir", help="folder of the adapters (generated there when it has no manifest.json)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="browser runs (best is reported)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and the report")
    ap.add_argument("--browser", default=None, help="browser binary (default: chromium on PATH)")
    args = ap.parse_args()

    browser = args.browser or shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    if not browser:
        raise SystemExit("no Chromium found: apt-get install chromium (or --browser PATH)")
    own = args.dir is None
    work = Path(args.dir or tempfile.mkdtemp(prefix="lora-audit-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    adapters = work / "adapters"
    try:
        if not (work / "manifest.json").exists():
            t = time.perf_counter()
            gen = subprocess.run([sys.executable, str(ROOT / "bench" / "scan.py"), "--generate-only", "--count",
                                  str(args.count), "--dir", str(adapters)], check=True, capture_output=True, text=True)
            written = re.search(r"^manifest: (.+)$", gen.stdout, re.M)
            if written is None:
                raise SystemExit("bench/scan.py --generate-only printed no manifest")
            shutil.move(written.group(1).strip(), work / "manifest.json")
            shutil.rmtree(Path(written.group(1).strip()).parent, ignore_errors=True)
            print(f"generated {args.count} adapters in {time.perf_counter() - t:.0f} s")
        manifest = json.loads((work / "manifest.json").read_text())
        report = work / "report.html"
        env = dict(os.environ, LORA_AUDIT_CACHE=str(work / "cache.sqlite"))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "report", str(adapters), "-o",
                            str(report), "--jobs", str(args.jobs), "--no-progress", "--no-cache"],
                           env=env, capture_output=True, text=True)
        t_report = time.perf_counter() - t
        if r.returncode not in (0, 1) or not report.exists():
            raise SystemExit(f"lora-audit report failed ({r.returncode}): {r.stderr[-2000:]}")
        size = report.stat().st_size
        html_text = report.read_text(encoding="utf-8")
        files = len(re.findall(r'<details class="file" id="f\d+"', html_text))

        empty = work / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title><p>empty</p>")
        ready, load, shot, base = [], [], [], []
        for _ in range(args.repeat):
            _, dom = browser_run(browser, report.as_uri(), "--dump-dom", "--virtual-time-budget=10000")
            m1 = re.search(r'data-ready-ms="(\d+)"', dom)
            m2 = re.search(r'data-load-ms="(\d+)"', dom)
            if not (m1 and m2 and 'data-report-ready="1"' in dom):
                raise SystemExit("the report's script did not run in the browser")
            ready.append(int(m1.group(1)) / 1000)
            load.append(int(m2.group(1)) / 1000)
            png = work / "shot.png"
            w, _ = browser_run(browser, report.as_uri(), f"--screenshot={png}")
            shot.append(w)
            w0, _ = browser_run(browser, empty.as_uri(), f"--screenshot={work / 'empty.png'}")
            base.append(w0)
        version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"lora-audit report benchmark — {files} files"
              + f" ({sum(m['size'] for m in manifest) / 1e9:.2f} GB of adapters)"
              + f", {version}, best of {args.repeat}")
        print("what | value | target | result")
        print(f"lora-audit report (analysis + HTML), --jobs {args.jobs} | {t_report:.1f} s |  | ")
        print(f"report size | {size / 1e6:.2f} MB ({size / max(files, 1) / 1e3:.1f} kB per file) | "
              f"< {TARGET_MB:.0f} MB | {'PASS' if size < TARGET_MB * 1e6 else 'MISS'}")
        print(f"parsed, script ran (data-ready-ms) | {min(ready):.3f} s |  | ")
        print(f"load event (data-load-ms) | {min(load):.3f} s | < {TARGET_LOAD_S:.0f} s | "
              f"{'PASS' if min(load) < TARGET_LOAD_S else 'MISS'}")
        print(f"chromium --screenshot, whole process | {min(shot):.2f} s (empty page {min(base):.2f} s; "
              f"report adds {min(shot) - min(base):.2f} s) |  | ")
        print(f"kept in {work}" if args.keep or not own else "")
    finally:
        if own and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
