"""Benchmark the probe's generation (a script, not a timed test). Prints one table measured in one run.

    python3 bench/probe.py [--device cpu|cuda] [--pairs 16] [--steps 4] [--sd15] [--sd15-steps 4]

* The tiny SD and tiny FLUX pipelines of audit.probe.tiny (random weights, built in code): images per second of
  ``audit.probe.run.generate`` for the paired generations of a quick probe (adapter on, then off), at batch sizes
  1, 4 and 8, with one CPU generator per image, as the probe runs.
* ``--sd15`` (meant for a GPU): a UNet of SD1.5's size (UNet2DConditionModel with the SD1.5 configuration, random
  weights: timing needs no real weights) at 512 px (64×64 latents), batch 4, ``--sd15-steps`` denoising steps
  with classifier-free guidance (batch 8 through the UNet): UNet steps per second and the implied images per
  second for a 25-step generation.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_rate(kind: str, device: str, pairs: int, steps: int, batch: int) -> float:
    from audit.probe import design, run, tiny

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sd":
            pipe, size = tiny.sd_pipeline(0), 64
            lora = tiny.write_sd_lora(tiny.sd_pipeline(0), Path(tmp) / "lora", scale=2.0)
        else:
            pipe, size = tiny.flux_pipeline(0), 16
            lora = tiny.write_flux_lora(tiny.flux_pipeline(0), Path(tmp) / "lora", scale=2.0)
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(device)
        run.apply_lora(pipe, str(lora), None)
        items = design.plan("style", subjects=min(pairs // 2, 24), templates=1, seeds=(0, 1))[:pairs]
        run.generate(pipe, items[:batch], lora=True, steps=steps, guidance=None, size=size, batch_size=batch)
        t = time.perf_counter()
        for on in (True, False):
            run.generate(pipe, items, lora=on, steps=steps, guidance=None, size=size, batch_size=batch)
        return 2 * len(items) / (time.perf_counter() - t)


def sd15_unet(device: str, steps: int) -> tuple[float, str]:
    import torch
    from diffusers import UNet2DConditionModel

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).to(device, dtype).eval()
    latents = torch.randn(8, 4, 64, 64, device=device, dtype=dtype)  # batch 4 x (cond, uncond)
    text = torch.randn(8, 77, 768, device=device, dtype=dtype)
    with torch.no_grad():
        unet(latents, 999, encoder_hidden_states=text)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for k in range(steps):
            unet(latents, 999 - k, encoder_hidden_states=text)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return per_step, f"{name}, {str(dtype).replace('torch.', '')}, {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M params"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--sd15", action="store_true", help="also time an SD1.5-size UNet at 512 px")
    ap.add_argument("--sd15-steps", type=int, default=4)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"lora-audit probe benchmark — device {args.device}, torch {torch.__version__}, {os.cpu_count()} cpu(s), "
          f"{args.pairs} pairs x 2 (adapter on and off), {args.steps} steps")
    print("pipeline | batch | images/s")
    for kind in ("sd", "flux"):
        for batch in (1, 4, 8):
            rate = tiny_rate(kind, args.device, args.pairs, args.steps, batch)
            print(f"tiny {kind.upper()} ({64 if kind == 'sd' else 16} px) | {batch} | {rate:.1f}")
    if args.sd15:
        per_step, what = sd15_unet(args.device, args.sd15_steps)
        print(f"SD1.5-size UNet, 512 px, batch 4 with CFG ({what}) | {per_step * 1000:.0f} ms per step | "
              f"{4 / (25 * per_step):.2f} images/s at 25 steps (UNet only)")


if __name__ == "__main__":
    main()
