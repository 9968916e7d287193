"""Run the probe: load the base from local files, apply the adapter, generate paired images, embed, test.

``run_probe(ProbeConfig(...))`` returns a :class:`ProbeResult`; tests inject a tiny pipeline and embedder through
``pipeline=`` and ``embedder=``. Every pair shares prompt and seed: one CPU ``torch.Generator`` per image, so
batching and the device do not change the latents. The base image of a pair is the same pipeline with the
adapter disabled.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from audit import findings as _findings
from audit.probe import design, stats

ADAPTER_NAME = "lora-audit"
PIPELINE_BY_FAMILY = {  # the diffusers pipeline class for a single-file base, by the adapter's family
    "sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sd2-v": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline", "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
    "sd3": "StableDiffusion3Pipeline", "sd3.5-medium": "StableDiffusion3Pipeline",
    "sd3.5-large": "StableDiffusion3Pipeline", "flux1": "FluxPipeline",
}


@dataclass
class ProbeConfig:
    base: str
    lora: str
    refs: str
    mode: str = "style"  # style | likeness
    controls: tuple[str, ...] = ()
    base_config: str | None = None  # a local diffusers config folder for a single-file base
    trigger: str | None = "auto"  # auto: from the adapter's metadata; None or "none": no trigger arm
    quick: bool = False
    subjects: int | None = None
    templates: int | None = None
    seeds: tuple[int, ...] | None = None
    steps: int | None = None  # None: 15 with --quick, else 25
    guidance: float | None = None  # None: the pipeline's default
    size: int | None = None  # None: the pipeline's default
    lora_scale: float = 1.0
    device: str = "cpu"
    batch_size: int = 4
    clip_model: str | None = None
    clip_weights: str | None = None
    save_images: str | None = None
    contact_sheet: str | None = None
    n_perm: int = 10_000
    n_boot: int = 2000
    seed: int = 0


@dataclass
class ProbeResult:
    mode: str
    verdict: str
    primary_arm: str
    embedder: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings: list = field(default_factory=list)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> asdict(stats.ArmResult)
    protocol: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------
# pipeline


def _quiet() -> None:
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging only
        pass


def load_base(base: str, *, family: str | None, config: str | None = None, device: str = "cpu"):
    """A diffusers pipeline from a local folder (``from_pretrained``) or a single-file checkpoint
    (``from_single_file`` of the family's pipeline class, with ``config`` a local diffusers folder); local files
    only, never the hub."""
    import diffusers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet()
    if os.path.isdir(base):
        pipe = diffusers.DiffusionPipeline.from_pretrained(base, local_files_only=True)
    elif os.path.isfile(base):
        name = PIPELINE_BY_FAMILY.get(family or "")
        if name is None:
            raise ValueError(f"cannot tell which pipeline a single-file base needs for family {family!r}; give the "
                             "base as a diffusers folder")
        kwargs = {"local_files_only": True}
        if config:
            kwargs["config"] = config
        pipe = getattr(diffusers, name).from_single_file(base, **kwargs)
    else:
        raise FileNotFoundError(f"base not found: {base}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _patched(pipe) -> int:
    """Modules of the pipeline that carry the probe's adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    count = 0
    for name in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        for module in model.modules():
            if isinstance(module, BaseTunerLayer) and ADAPTER_NAME in getattr(module, "lora_A", {}):
                count += 1
    return count


def apply_lora(pipe, lora: str, expected_layers: int | None, scale: float = 1.0) -> tuple[int, list]:
    """Load the adapter (diffusers converts kohya and other key formats) and compare the layers it patched with
    the layers lora-audit parsed; a difference is finding LA501."""
    _quiet()
    pipe.load_lora_weights(lora, adapter_name=ADAPTER_NAME)
    pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])
    patched = _patched(pipe)
    found = []
    if expected_layers is not None and patched != expected_layers:
        found.append(_findings.make("LA501", f"diffusers patched {patched} layer(s); the file has "
                                             f"{expected_layers} adapter layer(s)"))
    return patched, found


def generate(pipe, items: list[design.ProbeItem], *, lora: bool, steps: int, guidance: float | None,
             size: int | None, batch_size: int, on_batch: Callable[[int], None] | None = None) -> list:
    """Images for ``items`` with the adapter enabled or disabled; one CPU generator per image."""
    import torch

    (pipe.enable_lora if lora else pipe.disable_lora)()
    images = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        kwargs: dict[str, Any] = {"num_inference_steps": steps, "output_type": "pil",
                                  "generator": [torch.Generator("cpu").manual_seed(i.seed) for i in batch]}
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
        if size is not None:
            kwargs["height"] = kwargs["width"] = size
        with torch.no_grad():
            images.extend(pipe([i.prompt for i in batch], **kwargs).images)
        if on_batch is not None:
            on_batch(len(batch))
    return images


def contact_sheet(pairs: list[tuple[Any, Any]], labels: list[str], path: str, *, cell: int = 160,
                  max_pairs: int = 32) -> str:
    """A PNG grid: for each pair, the base image and the LoRA image side by side, two pairs per row."""
    from PIL import Image, ImageDraw

    pairs = pairs[:max_pairs]
    cols = 2
    rows = (len(pairs) + cols - 1) // cols
    label_h = 14
    sheet = Image.new("RGB", (cols * 2 * cell + (cols - 1) * 8, max(1, rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ((base, lora), label) in enumerate(zip(pairs, labels)):
        x = (k % cols) * (2 * cell + 8)
        y = (k // cols) * (cell + label_h)
        sheet.paste(base.convert("RGB").resize((cell, cell)), (x, y + label_h))
        sheet.paste(lora.convert("RGB").resize((cell, cell)), (x + cell, y + label_h))
        draw.text((x + 2, y + 1), f"base | LoRA  {label}"[:48], fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# the probe


def _trigger(cfg: ProbeConfig, record) -> str | None:
    if cfg.trigger is None or cfg.trigger == "none":
        return None
    if cfg.trigger != "auto":
        return cfg.trigger
    triggers = record.claims.triggers if record is not None and record.claims is not None else []
    return triggers[0].word if triggers else None


def run_probe(cfg: ProbeConfig, *, pipeline=None, embedder=None, record=None,
              progress: Callable[[int, int], None] | None = None) -> ProbeResult:
    """The whole probe. ``record``: the adapter's AuditRecord when the caller has one (else it is inspected)."""
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    if cfg.mode not in ("style", "likeness"):
        raise ValueError("mode must be style or likeness")
    if record is None:
        from audit.analyse import Options, inspect_file

        record = inspect_file(cfg.lora, Options(hashes=False, device="cpu"))
    if record.status == "error":
        raise ValueError(f"the adapter could not be read: {record.error.code} {record.error.message}")
    layers = record.adapter.layers if record.adapter is not None else None
    family = record.fingerprint.family if record.fingerprint is not None else None
    warnings: list[str] = []

    if embedder is None:
        if not cfg.clip_model:
            raise ValueError("give the CLIP model: --clip-model NAME --clip-weights FILE, or --clip-model "
                             "local-dir:FOLDER")
        from audit.probe.embed import OpenClipEmbedder

        embedder = OpenClipEmbedder(cfg.clip_model, cfg.clip_weights, device=cfg.device)
    if cfg.mode == "likeness":
        warnings.append("no face embedder is installed: likeness is measured with CLIP image embeddings, which "
                        "mix identity with pose, clothing and setting")
    from audit.probe.embed import load_images

    target_images, _ = load_images(cfg.refs)
    control_images = {}
    for folder in cfg.controls:
        name = Path(folder).name or folder
        while name in control_images:
            name += "'"
        control_images[name], _ = load_images(folder)
    t = time.perf_counter()
    target = embedder.embed(target_images)
    controls = {k: embedder.embed(v) for k, v in control_images.items()}
    timing["embed_references"] = time.perf_counter() - t

    t = time.perf_counter()
    pipe = pipeline if pipeline is not None else load_base(cfg.base, family=family, config=cfg.base_config,
                                                           device=cfg.device)
    if pipeline is not None:
        pipe.set_progress_bar_config(disable=True)
    patched, found = apply_lora(pipe, cfg.lora, layers, cfg.lora_scale)
    timing["load"] = time.perf_counter() - t

    trigger = _trigger(cfg, record)
    items = design.plan(cfg.mode, trigger=trigger, quick=cfg.quick, subjects=cfg.subjects,
                        templates=cfg.templates, seeds=cfg.seeds)
    steps = cfg.steps if cfg.steps is not None else (15 if cfg.quick else 25)
    total = 2 * len(items)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    t = time.perf_counter()
    try:
        lora_images = generate(pipe, items, lora=True, steps=steps, guidance=cfg.guidance, size=cfg.size,
                               batch_size=cfg.batch_size, on_batch=tick)
        base_images = generate(pipe, items, lora=False, steps=steps, guidance=cfg.guidance, size=cfg.size,
                               batch_size=cfg.batch_size, on_batch=tick)
    finally:
        pipe.enable_lora()
    timing["generate"] = time.perf_counter() - t
    timing["images_per_second"] = total / timing["generate"] if timing["generate"] > 0 else float("nan")

    t = time.perf_counter()
    lora_emb = embedder.embed(lora_images)
    base_emb = embedder.embed(base_images)
    timing["embed_images"] = time.perf_counter() - t

    arms: dict[str, dict[str, Any]] = {}
    results: dict[str, stats.ArmResult] = {}
    for arm in dict.fromkeys(i.arm for i in items):
        idx = [k for k, i in enumerate(items) if i.arm == arm]
        clusters = [items[k].cluster for k in idx]
        groups = [f"{items[k].seed}|{items[k].template}" for k in idx]
        res = stats.analyse_arm(lora_emb[idx], base_emb[idx], target, controls or None, clusters, groups,
                                n_perm=cfg.n_perm, n_boot=cfg.n_boot, seed=cfg.seed)
        results[arm] = res
        arms[arm] = dataclasses.asdict(res)
    primary = "trigger" if "trigger" in results else "plain"
    n_primary = results[primary].effect.n_pairs
    decided = stats.verdict(results[primary], min_dz=design.min_detectable_dz(n_primary))
    warnings += decided.warnings
    if cfg.device == "cpu" and cfg.quick:
        warnings.append("CPU --quick mode: few pairs and steps; a 'not detected' here is weak evidence")
    if decided.verdict == "captured":
        found.append(_findings.make("LA500", f"{cfg.mode} captured: {decided.reasons[-2]}"))
    elif decided.verdict == "shifts_style_nonspecifically":
        found.append(_findings.make("LA502", decided.reasons[-2]))

    artifacts: dict[str, str] = {}
    if cfg.contact_sheet:
        labels = [f"{i.subject} s{i.seed} {i.arm}" for i in items]
        artifacts["contact_sheet"] = contact_sheet(list(zip(base_images, lora_images)), labels, cfg.contact_sheet)
    if cfg.save_images:
        out = Path(cfg.save_images)
        out.mkdir(parents=True, exist_ok=True)
        for k, (b, lo) in enumerate(zip(base_images, lora_images)):
            b.save(out / f"{k:04d}-base.png")
            lo.save(out / f"{k:04d}-lora.png")
        artifacts["images"] = str(out)
    timing["total"] = time.perf_counter() - t0
    import diffusers
    import torch

    return ProbeResult(
        mode=cfg.mode, verdict=decided.verdict, primary_arm=primary, embedder=getattr(embedder, "name", "custom"),
        reasons=decided.reasons, warnings=warnings, findings=found, arms=arms,
        protocol={"pairs": len(items), "arms": list(results), "trigger": trigger, "steps": steps,
                  "guidance": cfg.guidance, "size": cfg.size, "lora_scale": cfg.lora_scale, "device": cfg.device,
                  "batch_size": cfg.batch_size, "seeds": sorted({i.seed for i in items}),
                  "subjects": list(dict.fromkeys(i.subject for i in items)),
                  "templates": list(dict.fromkeys(i.template for i in items)),
                  "scheduler": type(pipe.scheduler).__name__, "pipeline": type(pipe).__name__,
                  "n_perm": cfg.n_perm, "n_boot": cfg.n_boot,
                  "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__}},
        inputs={"base": cfg.base, "lora": cfg.lora, "lora_layers": layers, "patched_layers": patched,
                "family": family, "references": len(target_images),
                "controls": {k: len(v) for k, v in control_images.items()}},
        artifacts=artifacts, timing=timing,
    )
