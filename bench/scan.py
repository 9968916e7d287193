"""Benchmark `lora-audit scan` over a synthetic collection (a script, not a timed test). Prints one table of
ratios measured in one run.

    python3 bench/scan.py [--count 2000] [--min-mb 1] [--max-mb 20] [--dir DIR] [--jobs 2] [--keep] [--seed 0]
                          [--gen-jobs N] [--generate-only] [--reuse MANIFEST] [--lora-audit CMD]

1. Writes ``count`` synthetic adapters with audit.corpus, mixed the way a downloaded collection is: SD1.5, SD2.1,
   SDXL, SD3 and FLUX.1; kohya, OneTrainer, ComfyUI-native, SimpleTuner-LyCORIS, diffusers-PEFT, PEFT folders
   (``adapter_model.safetensors`` + ``adapter_config.json`` + a model card), ai-toolkit, XLabs, BFL control,
   diffusers-legacy and cloneofsimo keys; LoRA, LoCon, Tucker, LoHa, LoKr, DoRA, OFT, BOFT, GLoRA and full
   diffs; F16, BF16 and F32. File sizes are log-uniform between --min-mb and --max-mb: each file takes a rank
   and the leading part of its module list (denoiser and text encoders alike) that come closest to its size.
   Most files carry their trainer's metadata (kohya ``ss_*`` with tag frequencies, ``modelspec.*`` with a
   license on some), some have none, and a few have Civitai / WebUI / LoRA-Manager sidecars. Factors are
   generated once per (layout, rank) and shared; every file gets its own metadata and one tensor of its own
   (a per-file perturbation of its first factor), so no two files, and no two tensor-data hashes, are equal.
   Adapter kinds whose files stay far below 1 MB (IA3, norm tuning, textual inversion) are left out.
2. Reads every file once (page cache warm for everything that follows), then times in this one run:
   * ``sha256sum`` over all adapter files, one process;
   * ``lora-audit scan DIR --policy commercial-hosted-service --jobs J --format jsonl`` with a fresh cache;
   * the same scan again with the cache warm;
   and checks that each adapter got exactly one JSONL record (ok or error), that the records' SHA-256 equal
   ``sha256sum``'s, that the cached run gives the same records, and how often the fingerprint's family is the
   family the file was generated for. Peak memory per worker and of the parent come from ``--summary-json``.
   After the table: the workers' time by stage (summed from the records' ``timing``), mean time per adapter
   kind, the slowest files, and the files whose fingerprint names another family (mostly files cut down to a
   few leading modules, which shapes cannot place).

Exits 1 when the scan fails to give one record per adapter (or does not run); missed targets only print MISS.
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
import math  # noqa: E402
import multiprocessing  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import corpus  # noqa: E402

# BOFT files need no planted truth here; the corpus would rebuild each layer's dense rotation for it
corpus._BOFT_DENSE_LIMIT = 0

POLICY = "commercial-hosted-service"
TARGET_FIRST_OVER_SHA = 2.5  # first scan / sha256sum, at most
TARGET_FIRST_OVER_SECOND = 20.0  # first scan / cached scan, at least

# ---------------------------------------------------------------------------------------------------------
# the mix: (family, key format, adapter, targets, text encoders, weight)

_MIX = {
    "sd1": (25, [
        ("kohya", "lora", "attn", True, 10), ("kohya", "lora", "blocks", True, 8), ("kohya", "locon", "all", True, 5),
        ("kohya", "loha", "all", False, 3), ("kohya", "lokr", "all", False, 2), ("kohya", "lora-tucker", "all", False, 1),
        ("kohya", "dora", "blocks", True, 1), ("kohya", "glora", "blocks", False, 1), ("kohya", "oft", "blocks", False, 1),
        ("kohya", "boft", "attn", False, 1), ("kohya", "full", "attn", False, 1),
        ("diffusers-legacy", "lora", "attn", True, 2), ("cloneofsimo", "lora", "attn", True, 1),
        ("onetrainer", "lora", "blocks", True, 3), ("diffusers-peft", "lora", "attn", True, 3),
        ("comfy-native", "lora", "blocks", True, 1), ("simpletuner-lycoris", "lokr", "all", False, 1),
        ("peft", "lora", "attn", False, 1),
    ]),
    "sd2": (5, [
        ("kohya", "lora", "blocks", True, 5), ("kohya", "locon", "all", False, 2), ("onetrainer", "lora", "blocks", True, 2),
        ("diffusers-peft", "lora", "attn", True, 2), ("diffusers-legacy", "lora", "attn", False, 1),
    ]),
    "sdxl": (35, [
        ("kohya", "lora", "attn", True, 10), ("kohya", "lora", "blocks", True, 8), ("kohya", "locon", "all", False, 4),
        ("kohya", "loha", "blocks", False, 3), ("kohya", "lokr", "all", False, 3), ("kohya", "loha-tucker", "all", False, 1),
        ("kohya", "lokr-full", "attn", False, 1), ("kohya", "oft", "attn", False, 1), ("kohya", "dora", "blocks", True, 1),
        ("onetrainer", "lora", "blocks", True, 4), ("onetrainer", "dora", "blocks", False, 1),
        ("diffusers-peft", "lora", "attn", True, 4), ("comfy-native", "lora", "blocks", True, 2),
        ("simpletuner-lycoris", "lokr", "all", False, 2), ("simpletuner-lycoris", "lora", "blocks", False, 1),
        ("diffusers-legacy", "lora", "attn", True, 1), ("peft", "loha", "attn", False, 1),
    ]),
    "sd3": (10, [
        ("kohya", "lora", "blocks", True, 4), ("diffusers-peft", "lora", "attn", False, 3),
        ("onetrainer", "lora", "blocks", True, 2), ("comfy-native", "lora", "attn", False, 1),
        ("simpletuner-lycoris", "lokr", "blocks", False, 1),
    ]),
    "flux1": (25, [
        ("kohya", "lora", "blocks", True, 8), ("ai-toolkit", "lora", "all-linear", False, 6),
        ("ai-toolkit", "lora", "attn", False, 2), ("diffusers-peft", "lora", "attn", False, 4),
        ("diffusers-peft", "lora", "all-linear", False, 2), ("xlabs", "lora", "attn", False, 2),
        ("bfl-control", "lora", "all-linear", False, 1), ("onetrainer", "lora", "blocks", False, 2),
        ("comfy-native", "lora", "blocks", False, 1), ("simpletuner-lycoris", "lokr", "all-linear", False, 2),
        ("kohya", "lokr", "blocks", False, 1), ("peft", "lora", "attn", False, 1),
    ]),
}

_RANKS = {
    "lora": (4, 8, 16, 32, 64, 128), "locon": (4, 8, 16, 32, 64), "dora": (8, 16, 32), "lora-tucker": (8, 16, 32),
    "loha": (4, 8, 16), "loha-tucker": (4, 8), "lokr": (4, 8, 16, 10000), "lokr-full": (4, 8, 16),
    "oft": (4, 8, 16, 32), "boft": (4, 8, 16), "glora": (4, 8, 16), "full": (4, 8),
}
_LOKR_FACTORS = (-1, 4, 8, 16)  # -1: the most balanced split (small files); 4..16: larger w2 blocks
_DTYPES = {  # (dtype, weight) per family
    "sd1": (("F16", 7), ("F32", 2), ("BF16", 1)), "sd2": (("F16", 7), ("F32", 2), ("BF16", 1)),
    "sdxl": (("F16", 6), ("BF16", 3), ("F32", 1)), "sd3": (("BF16", 6), ("F16", 3), ("F32", 1)),
    "flux1": (("BF16", 7), ("F16", 2), ("F32", 1)),
}
_CIVITAI_BASE = {"sd1": ("SD 1.5",), "sd2": ("SD 2.1",), "sdxl": ("SDXL 1.0", "Pony", "Illustrious"),
                 "sd3": ("SD 3",), "flux1": ("Flux.1 D", "Flux.1 S")}
_WEBUI_VERSION = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd3": "SD3", "flux1": "Unknown"}
_LICENSES = ("CreativeML Open RAIL-M", "CreativeML Open RAIL++-M", "flux-1-dev-non-commercial-license", "apache-2.0",
             "other", "", "cc-by-nc-4.0")
_CARD_LICENSE = {"sd1": "creativeml-openrail-m", "sd2": "openrail++", "sdxl": "openrail++",
                 "sd3": "stabilityai-ai-community", "flux1": "other"}
_WORDS = ("neon", "harbor", "ink", "sketch", "velvet", "glass", "autumn", "pixel", "marble", "cyber", "paper",
          "lantern", "aurora", "chrome", "moss", "ember", "tidal", "clay", "noir", "sakura")


def _mix() -> tuple[list[tuple], np.ndarray]:
    combos, weights = [], []
    for family, (fw, rows) in _MIX.items():
        total = sum(r[-1] for r in rows)
        for fmt, adapter, targets, te, w in rows:
            combos.append((family, fmt, adapter, targets, te))
            weights.append(fw * w / total)
    w = np.asarray(weights)
    return combos, w / w.sum()


# ---------------------------------------------------------------------------------------------------------
# generation: templates (factors shared by files of one layout and rank), then per-file variation


class Template:
    """The tensors of one (layout, rank) in F32 (values already rounded to F32), per module, in module order."""

    def __init__(self, synths: list[corpus.Synth]):
        self.tensors: dict[str, np.ndarray] = {}
        self.modules: list[tuple[str, list[str], int]] = []  # (stem, tensor names, bytes at F32) per module
        self.parts: list[int] = []  # index into modules where each part (denoiser, text encoders) starts
        md: dict[str, str] = {}
        for s in synths:
            self.parts.append(len(self.modules))
            for stem, t in s.truth.items():
                names = [n for n in t.parts.values() if n not in self.tensors]
                for n in names:
                    self.tensors[n] = s.tensors[n]
                self.modules.append((stem, names, sum(s.tensors[n].nbytes for n in names)))
            for k, v in s.metadata.items():
                if k == "lora_adapter_metadata" and k in md:  # diffusers: one config per component
                    merged = json.loads(md[k])
                    merged.update(json.loads(v))
                    md[k] = json.dumps(merged, indent=2, sort_keys=True)
                elif k not in md:
                    md[k] = v
        self.metadata = md
        self.adapter_config = next((s.adapter_config for s in synths if s.adapter_config), None)
        self.dtypes = {n: ("I64" if a.dtype == np.int64 else "F32") for n, a in self.tensors.items()}
        self.nbytes = sum(b for _, _, b in self.modules)
        self._converted: dict[str, dict[str, np.ndarray]] = {}

    def pick(self, target_f32: float, te_share: float, lo_f32: float, hi_f32: float) -> list[int]:
        """Module indices: the leading modules of each part, the text encoders given up to ``te_share`` of the
        bytes, so that the total comes closest to ``target_f32`` bytes (at F32) within [lo_f32, hi_f32]."""
        bounds = self.parts + [len(self.modules)]
        spans = [range(bounds[i], bounds[i + 1]) for i in range(len(self.parts))]
        den, tes = spans[0], spans[1:]
        chosen: list[int] = []
        te_budget = te_share * target_f32
        for span in tes:
            got = 0
            for i in span:
                if got + self.modules[i][2] > te_budget / max(1, len(tes)) and got:
                    break
                chosen.append(i)
                got += self.modules[i][2]
        left = target_f32 - sum(self.modules[i][2] for i in chosen)
        fixed = target_f32 - left
        cum = np.cumsum([self.modules[i][2] for i in den])
        n = int(np.searchsorted(cum, left))  # den[: n + 1] reaches the size
        options = [k for k in (n - 1, n) if 0 <= k < len(cum)] or [len(cum) - 1]
        inside = [k for k in options if lo_f32 <= fixed + cum[k] <= hi_f32]
        k = min(inside or options, key=lambda k: abs(cum[k] - left))
        return sorted(chosen + list(den[: k + 1]))

    def converted(self, dtype: str) -> dict[str, np.ndarray]:
        """Every tensor stored as ``dtype`` (cached: the files of one template share their factors)."""
        if dtype not in self._converted:
            self._converted[dtype] = {
                n: a if self.dtypes[n] == "I64" or dtype == "F32" else corpus.encode(a, dtype)
                for n, a in self.tensors.items()
            }
        return self._converted[dtype]


def _build_part(kw: dict, need_f32: float) -> corpus.Synth:
    """corpus.build with just enough leading modules for ``need_f32`` bytes (or all of them)."""
    probe = corpus.build(**kw, max_modules=12)
    got = sum(a.nbytes for a in probe.tensors.values())
    if len(probe.truth) < 12:
        return probe
    m = int(need_f32 / max(1.0, got / 12)) + 12
    try:  # module widths grow along the list: size the prefix from the shapes the corpus will use
        plan = corpus._Plan(fmt=kw["fmt"], family=kw["family"], adapter=kw["adapter"], rank=kw["rank"], alpha=None,
                            dtype="F32", spectrum=None, seed=0, factor=kw.get("factor", -1), decompose_both=False)
        dense = kw["adapter"] in ("full", "lokr-full") or kw["rank"] >= 10000  # bytes grow as out x in
        widths = np.cumsum([mod.out_features * mod.fan_in if dense else mod.out_features + mod.fan_in
                            for _, _, mod in corpus._plan_modules(plan, kw["targets"], kw["text_encoders"])])
        m = int(np.searchsorted(widths, need_f32 * 1.05 / (got / widths[11]))) + 1
    except (AttributeError, TypeError, ValueError, KeyError):  # corpus internals changed: estimate as above
        pass
    while True:
        s = corpus.build(**kw, max_modules=m)
        have = sum(a.nbytes for a in s.tensors.values())
        if len(s.truth) < m or have >= need_f32:
            return s
        m = int(m * need_f32 / have * 1.1) + 8  # the first modules are often the narrow ones


def _template(family, fmt, adapter, targets, te, rank, factor, need_f32: float) -> Template:
    kw = dict(family=family, fmt=fmt, adapter=adapter, rank=rank, dtype="F32", seed=rank)
    if adapter in ("lokr", "lokr-full"):
        kw["factor"] = factor
    if adapter in ("oft", "boft"):
        kw["alpha"] = 0.0  # no constraint
    synths = [_build_part(dict(kw, targets=targets, text_encoders=False), need_f32)]
    if te:
        synths.append(_build_part(dict(kw, targets="te-only", text_encoders=True), need_f32 * 0.3))
    return Template(synths)


def _metadata(t: Template, job: dict, chosen_stems: set[str], rng: np.random.Generator) -> dict[str, str]:
    family, fmt = job["family"], job["fmt"]
    md = dict(t.metadata)
    if fmt == "cloneofsimo":  # per-module rank entries of modules left out
        md = {k: v for k, v in md.items() if not k.endswith(":rank") or k[: -len(":rank")] in chosen_stems}
    name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_v{rng.integers(1, 9)}"
    trigger = f"{rng.choice(_WORDS)}{rng.integers(10, 999)}"
    style = rng.random()
    if fmt in ("kohya", "onetrainer", "comfy-native") and style < 0.15:
        return {}  # stripped: no metadata at all
    if fmt == "kohya":
        folder = f"{rng.integers(1, 20)}_{trigger}"
        tags = {trigger: int(rng.integers(20, 200))}
        for w in rng.choice(_WORDS, size=int(rng.integers(3, 15)), replace=False):
            tags[str(w)] = int(rng.integers(1, 100))
        md.update({
            "ss_output_name": name,
            "ss_seed": str(int(rng.integers(0, 2**31))),
            "ss_learning_rate": repr(float(rng.choice([1e-4, 2e-4, 5e-4, 1e-3]))),
            "ss_num_train_images": str(int(rng.integers(10, 2000))),
            "ss_num_epochs": str(int(rng.integers(1, 30))),
            "ss_training_started_at": repr(1.7e9 + float(rng.integers(0, 10**7))),
            "ss_tag_frequency": json.dumps({folder: tags}),
            "ss_dataset_dirs": json.dumps({folder: {"n_repeats": int(folder.split("_")[0]),
                                                    "img_count": int(rng.integers(10, 300))}}),
            "ss_training_comment": f"trigger: {trigger}",
        })
    elif "modelspec.sai_model_spec" not in md and style < 0.3:
        md.update(corpus._modelspec(family, corpus._KOHYA_ARCH[family], corpus._IMPL[family]))
    if "modelspec.sai_model_spec" in md:
        md["modelspec.title"] = name
        md["modelspec.date"] = f"2024-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}T12:00:00"
        if rng.random() < 0.4:
            md["modelspec.license"] = str(rng.choice(_LICENSES))
        if rng.random() < 0.3:
            md["modelspec.trigger_phrase"] = trigger
    if fmt not in ("kohya",) and style > 0.8:
        md["ssmd_keywords"] = trigger
    return md


def _sidecars(path: Path, job: dict, rng: np.random.Generator) -> list[str]:
    """Civitai-style files beside ``path`` for a few files; returns the names written."""
    family, roll = job["family"], job["sidecar_roll"]
    if roll >= 0.05 or job["fmt"] == "peft":
        return []
    stem = path.name[: -len(".safetensors")]
    sha = hashlib.sha256(path.read_bytes()).hexdigest().upper()
    choices = _CIVITAI_BASE[family]
    base = choices[0] if rng.random() < 0.8 else str(rng.choice(choices))  # now and then a wrong variant
    uses = [["None"], ["Image"], ["Image", "RentCivit"], ["Image", "RentCivit", "Rent", "Sell"]][int(rng.integers(4))]
    trigger = f"{rng.choice(_WORDS)}{rng.integers(10, 999)}"
    version = {
        "id": int(rng.integers(10**5, 10**6)), "modelId": int(rng.integers(10**4, 10**5)), "name": "v1.0",
        "baseModel": base, "trainedWords": [trigger],
        "model": {"name": stem.replace("_", " "), "type": "LORA", "nsfw": False,
                  "allowNoCredit": bool(rng.random() < 0.5), "allowCommercialUse": uses,
                  "allowDerivatives": True, "allowDifferentLicense": False},
        "files": [{"name": path.name, "type": "Model", "primary": True,
                   "hashes": {"SHA256": sha, "AutoV2": sha[:10]}}],
    }
    written = []
    if roll < 0.03:
        (path.parent / f"{stem}.civitai.info").write_text(json.dumps(version, indent=2))
        written.append(f"{stem}.civitai.info")
    elif roll < 0.04:
        card = {"description": f"{base} style LoRA", "sd version": _WEBUI_VERSION[family],
                "activation text": trigger, "preferred weight": 0.8, "notes": ""}
        (path.parent / f"{stem}.json").write_text(json.dumps(card, indent=4))
        written.append(f"{stem}.json")
    else:
        rec = {"file_name": stem, "model_name": stem, "base_model": base, "sha256": sha.lower(), "tags": ["style"],
               "civitai": version}
        (path.parent / f"{stem}.metadata.json").write_text(json.dumps(rec, indent=2))
        written.append(f"{stem}.metadata.json")
    return written


def _write_group(args: tuple) -> list[dict]:
    """Write every file of one layout (family, format, adapter, targets, text encoders); returns manifest rows."""
    combo, jobs, root, seed = args
    family, fmt, adapter, targets, te = combo
    root = Path(root)
    need = max(j["target"] for j in jobs) * 1.05 * 4 / 2  # F32 template bytes for the largest F16 target
    templates: dict[tuple, Template] = {}
    rows = []
    for job in jobs:
        rng = np.random.default_rng([seed, job["index"]])
        itemsize = {"F32": 4, "F16": 2, "BF16": 2}[job["dtype"]]
        target_f32 = job["target"] * 4 / itemsize
        ranks = list(_RANKS[adapter])
        factor = int(rng.choice(_LOKR_FACTORS)) if adapter in ("lokr", "lokr-full") else -1
        fits = []
        for r in ranks:  # ascending; the first few ranks whose template reaches the size
            key = (r, factor)
            if key not in templates:
                templates[key] = _template(family, fmt, adapter, targets, te, r, factor, need)
            if templates[key].nbytes >= target_f32 * 0.97:
                fits.append(key)
                if len(fits) == 4:
                    break
        if fits:
            w = np.array([0.2, 0.3, 0.3, 0.2][: len(fits)])
            key = fits[int(rng.choice(len(fits), p=w / w.sum()))]
        else:  # no rank of this layout reaches the size: the largest there is
            key = max(templates, key=lambda k: templates[k].nbytes)
        t = templates[key]
        idx = t.pick(target_f32, float(rng.uniform(0.05, 0.25)), job["lo"] * 4 / itemsize, job["hi"] * 4 / itemsize)
        stems = {t.modules[i][0] for i in idx}
        names = [n for i in idx for n in t.modules[i][1]]
        stored = t.converted(job["dtype"])
        tensors = {n: stored[n] for n in names}
        dtypes = {n: (t.dtypes[n] if t.dtypes[n] == "I64" else job["dtype"]) for n in names}
        # one tensor of its own: the first module's smallest float factor, perturbed with this file's seed
        first = [n for n in t.modules[idx[0]][1] if t.tensors[n].ndim >= 1 and t.dtypes[n] != "I64"]
        own = min(first, key=lambda n: t.tensors[n].size)
        base = t.tensors[own].astype(np.float64)
        tensors[own] = corpus.encode(base * (1.0 + 0.02 * rng.standard_normal(base.shape)), job["dtype"])
        md = _metadata(t, job, stems, rng)
        name = f"lora_{job['index']:05d}"
        if fmt == "peft":
            folder = root / name
            folder.mkdir()
            path = folder / "adapter_model.safetensors"
            cfg = dict(t.adapter_config or {})
            (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
            card = (f"---\nbase_model: {corpus._HF_BASE[family]}\nlicense: {_CARD_LICENSE[family]}\n"
                    f"tags:\n- lora\n- text-to-image\n---\n# {name}\n")
            (folder / "README.md").write_text(card)
        else:
            path = root / f"{name}.safetensors"
        size = corpus.write_safetensors(path, tensors, dtypes, md)
        side = _sidecars(path, job, rng)
        rows.append(dict(index=job["index"], path=str(path), size=size, family=family, fmt=fmt, adapter=adapter,
                         targets=targets, dtype=job["dtype"], rank=key[0], factor=factor, modules=len(idx),
                         metadata=bool(md), sidecars=side, target=job["target"]))
    return rows


def generate(root: Path, count: int, min_mb: float, max_mb: float, seed: int, procs: int) -> list[dict]:
    combos, weights = _mix()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(combos), size=count, p=weights)
    sizes = np.exp(rng.uniform(math.log(min_mb * 1e6), math.log(max_mb * 1e6), size=count))
    groups: dict[int, list[dict]] = defaultdict(list)
    for i, (c, size) in enumerate(zip(picks, sizes)):
        family = combos[c][0]
        dts, dws = zip(*_DTYPES[family])
        dtype = str(rng.choice(dts, p=np.asarray(dws) / sum(dws)))
        groups[int(c)].append(dict(index=i, family=family, fmt=combos[c][1], target=float(size), dtype=dtype,
                                   sidecar_roll=float(rng.random()), lo=min_mb * 1e6, hi=max_mb * 1e6 - 65536))
    work = sorted(((combos[c], jobs, str(root), seed) for c, jobs in groups.items()),
                  key=lambda w: -sum(j["target"] for j in w[1]))  # largest groups first
    rows: list[dict] = []
    if procs > 1:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for part in pool.imap_unordered(_write_group, work):
                rows += part
    else:
        for w in work:
            rows += _write_group(w)
    return sorted(rows, key=lambda r: r["index"])


# ---------------------------------------------------------------------------------------------------------
# measurement


def _warm(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                total += len(chunk)
    return total


def _timed(argv: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(argv, check=False, **kw)
    return time.perf_counter() - t, r


def _records(path: Path) -> tuple[list[dict], int]:
    """The JSONL records of a scan, and the count of lines that are not JSON objects."""
    recs, bad = [], 0
    if not path.exists():
        return recs, bad
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                recs.append(obj)
            else:
                bad += 1
    return recs, bad


def _record_path(rec: dict) -> str | None:
    p = (rec.get("file") or {}).get("path")
    if not isinstance(p, str):
        return None
    p = os.path.realpath(p)
    if os.path.isdir(p):
        p = os.path.join(p, "adapter_model.safetensors")
    return p


def _stable(rec: dict) -> str:
    """A record without its timing fields (and without layers, which a scan may trim)."""
    d = dict(rec)
    d.pop("timing", None)
    if isinstance(d.get("engine"), dict):
        d["engine"] = {k: v for k, v in d["engine"].items() if k != "seconds"}
    return json.dumps(d, sort_keys=True)


def _check(recs: list[dict], expected: dict[str, dict]) -> dict:
    per = Counter()
    unknown = 0
    for r in recs:
        p = _record_path(r)
        if p in expected:
            per[p] += 1
        else:
            unknown += 1
    return dict(
        records=len(recs),
        missing=sum(1 for p in expected if per[p] == 0),
        duplicated=sum(1 for p in expected if per[p] > 1),
        unknown=unknown,
        errors=sum(1 for r in recs if r.get("status") != "ok"),
        ok=all(per[p] == 1 for p in expected) and unknown == 0,
    )


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--min-mb", type=float, default=1.0)
    ap.add_argument("--max-mb", type=float, default=20.0)
    ap.add_argument("--dir", help="where to write the files (default: a new folder under the temp dir); must be "
                                  "empty or absent")
    ap.add_argument("--jobs", type=int, default=2, help="scan workers (--jobs of lora-audit scan)")
    ap.add_argument("--gen-jobs", type=int, default=os.cpu_count() or 1, help="processes writing the files")
    ap.add_argument("--keep", action="store_true", help="keep the files, the records and the cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generate-only", action="store_true", help="write the files and stop (implies --keep)")
    ap.add_argument("--reuse", metavar="MANIFEST", help="time the files a previous run wrote (its manifest.json, "
                                                        "printed by --generate-only) instead of writing new ones")
    ap.add_argument("--lora-audit", help="command line that runs lora-audit (default: this checkout's cli.py "
                                         "with the current Python)")
    args = ap.parse_args()
    if not (0 < args.min_mb <= args.max_mb) or args.count < 1:
        raise SystemExit("need 0 < --min-mb <= --max-mb and --count >= 1")
    keep = args.keep or args.generate_only

    reused = json.loads(Path(args.reuse).read_text()) if args.reuse else None
    if reused is not None:
        keep = True  # never delete files this run did not write
        # each file is ROOT/lora_N.safetensors, or ROOT/lora_N/adapter_model.safetensors for a PEFT folder
        roots = {Path(r["path"]).resolve().parents[1 if r["fmt"] == "peft" else 0] for r in reused}
        if len(roots) != 1:
            raise SystemExit(f"{args.reuse} lists files in more than one folder: {sorted(map(str, roots))[:3]}")
        (root,) = roots
        if args.dir and Path(args.dir).resolve() != root:
            raise SystemExit(f"--dir {args.dir} does not hold the files of {args.reuse} ({root})")
    made_root = args.dir is None and reused is None
    if reused is None:
        root = Path(args.dir or tempfile.mkdtemp(prefix="lora-audit-scan-bench-")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise SystemExit(f"{root} is not empty")
    work = Path(tempfile.mkdtemp(prefix="lora-audit-scan-work-")).resolve()  # records, summaries, cache
    lora_audit = shlex.split(args.lora_audit) if args.lora_audit else [sys.executable, "-c", "import cli; cli.main()"]
    failed = False
    try:
        t = time.perf_counter()
        rows = reused or generate(root, args.count, args.min_mb, args.max_mb, args.seed, max(1, args.gen_jobs))
        t_gen = time.perf_counter() - t
        (work / "manifest.json").write_text(json.dumps(rows, indent=1))
        total = sum(r["size"] for r in rows)
        sizes = np.array([r["size"] for r in rows]) / 1e6
        made = (f"reused {args.reuse}" if reused else
                f"{t_gen:.1f} s ({total / 1e6 / t_gen:.0f} MB/s, {args.gen_jobs} process(es))")
        print(f"generated {len(rows)} adapters in {root}: {total / 1e9:.2f} GB, {made}; sizes min "
              f"{sizes.min():.2f} / median {np.median(sizes):.2f} / max {sizes.max():.2f} MB")
        print("families:", dict(Counter(r["family"] for r in rows)))
        print("formats:", dict(Counter(r["fmt"] for r in rows)))
        print("adapters:", dict(Counter(r["adapter"] for r in rows)))
        print("dtypes:", dict(Counter(r["dtype"] for r in rows)), "| with metadata:",
              sum(r["metadata"] for r in rows), "| with sidecars:", sum(bool(r["sidecars"]) for r in rows),
              "| PEFT folders:", sum(r["fmt"] == "peft" for r in rows))
        print(f"manifest: {work / 'manifest.json'}")
        if args.generate_only:
            return

        expected = {os.path.realpath(r["path"]): r for r in rows}
        adapters = sorted(expected)
        every = sorted(str(p) for p in root.rglob("*") if p.is_file())
        with open("/proc/meminfo") as f:
            mem_avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable")), 0)
        t = time.perf_counter()
        _warm([Path(p) for p in every])
        t_warm = time.perf_counter() - t
        print(f"page cache warmed: read all {len(every)} files once ({t_warm:.1f} s) before timing anything; "
              f"MemAvailable {mem_avail / 1e9:.1f} GB "
              f"{'(enough to hold them)' if mem_avail > 1.2 * total else '(NOT enough: timings include disk reads)'}")

        t_sha, sha = _timed(["sha256sum", "--", *adapters], capture_output=True, text=True)
        if sha.returncode != 0:
            raise SystemExit(f"sha256sum failed: {sha.stderr[-2000:]}")
        sums = {}
        for line in sha.stdout.splitlines():
            digest, _, name = line.partition("  ")
            sums[os.path.realpath(name)] = digest.upper()

        cache = work / "cache.sqlite"
        scans = []
        for run in (1, 2):
            out, summary = work / f"scan{run}.jsonl", work / f"summary{run}.json"
            argv = [*lora_audit, "scan", str(root), "--policy", POLICY, "--jobs", str(args.jobs), "--format", "jsonl",
                    "--out", str(out), "--cache", str(cache), "--no-progress", "--summary-json", str(summary)]
            secs, r = _timed(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            recs, bad_lines = _records(out)
            chk = _check(recs, expected)
            chk.update(seconds=secs, rc=r.returncode, bad_lines=bad_lines, summary=_load_json(summary), recs=recs,
                       stderr=r.stderr[-3000:])
            scans.append(chk)
            if r.returncode not in (0, 1, 2):  # 2: some file could not be read (its record says why)
                print(f"scan {run} exited {r.returncode}; stderr tail:\n{r.stderr[-3000:]}")

        first, second = scans
        r_sha = first["seconds"] / t_sha
        r_cache = first["seconds"] / second["seconds"]
        by_path1 = {_record_path(r): r for r in first["recs"]}
        by_path2 = {_record_path(r): r for r in second["recs"]}
        same = sum(1 for p in adapters if p in by_path1 and p in by_path2 and _stable(by_path1[p]) == _stable(by_path2[p]))
        sha_ok = sum(1 for p in adapters if p in by_path1
                     and ((by_path1[p].get("hashes") or {}).get("sha256") or "").upper() == sums.get(p))
        fam_ok, fam_by, fam_wrong = 0, defaultdict(lambda: [0, 0]), []
        for p in adapters:
            rec = by_path1.get(p)
            fam = ((rec or {}).get("fingerprint") or {}).get("family")
            want = expected[p]["family"]
            fam_by[want][1] += 1
            if fam == want:
                fam_ok += 1
                fam_by[want][0] += 1
            elif rec is not None and rec.get("status") == "ok":
                e = expected[p]
                fam_wrong.append(f"{Path(p).name if e['fmt'] != 'peft' else Path(p).parent.name} "
                                 f"({want} {e['fmt']} {e['adapter']} {e['targets']}, {e['modules']} modules): {fam}")
        order1 = [_record_path(r) for r in first["recs"]]
        order2 = [_record_path(r) for r in second["recs"]]

        def mem(s: dict | None) -> str:
            if not s:
                return "n/a (no summary)"
            per = s.get("worker_peak_rss_mb") or {}
            vals = sorted(float(v) for v in per.values()) if isinstance(per, dict) else []
            workers = (f"workers {len(vals)}: {', '.join(f'{v:.0f}' for v in vals)} MB (max "
                       f"{float(s.get('max_worker_peak_rss_mb') or 0):.0f})") if vals else "no workers"
            return f"{workers}; parent {float(s.get('parent_peak_rss_mb') or 0):.0f} MB"

        def counts(s: dict | None) -> str:
            if not s:
                return "n/a"
            secs = s.get("seconds")
            return ", ".join([*(f"{k} {s.get(k)}" for k in ("total", "analysed", "cached", "errors")),
                              f"seconds {secs:.2f}" if isinstance(secs, (int, float)) else f"seconds {secs}"])

        print()
        print(f"lora-audit scan benchmark — {len(adapters)} adapters, {total / 1e9:.2f} GB, --jobs {args.jobs}, "
              f"policy {POLICY}, python {sys.version.split()[0]}, {os.cpu_count()} cpu(s); page cache warm; "
              f"1-min load average {os.getloadavg()[0]:.2f} after")
        print("what | value | target | result")
        rows_out = [
            ("files / total size", f"{len(adapters)} / {total / 1e9:.2f} GB", "", ""),
            ("sha256sum, one process", f"{t_sha:.1f} s ({total / 1e6 / t_sha:.0f} MB/s)", "", ""),
            ("first scan (fresh cache)", (f"{first['seconds']:.1f} s ({total / 1e6 / first['seconds']:.0f} MB/s, "
             f"{len(adapters) / first['seconds']:.1f} files/s), exit {first['rc']}"), "", ""),
            ("second scan (cache warm)", f"{second['seconds']:.2f} s, exit {second['rc']}", "", ""),
            ("first / sha256sum", f"{r_sha:.2f}", f"<= {TARGET_FIRST_OVER_SHA}",
             "PASS" if r_sha <= TARGET_FIRST_OVER_SHA else "MISS"),
            ("first / second", f"{r_cache:.1f}", f">= {TARGET_FIRST_OVER_SECOND:.0f}",
             "PASS" if r_cache >= TARGET_FIRST_OVER_SECOND else "MISS"),
            ("memory, first scan", mem(first["summary"]), "", ""),
            ("memory, second scan", mem(second["summary"]), "", ""),
        ]
        for name, s in (("first", first), ("second", second)):
            rows_out.append((f"records, {name} scan",
                             (f"{s['records']} (missing {s['missing']}, duplicated {s['duplicated']}, unknown "
                              f"{s['unknown']}, bad lines {s['bad_lines']}), errors {s['errors']}"),
                             "one per file, 0 errors", "PASS" if s["ok"] and s["errors"] == 0 else
                             ("FAIL" if not s["ok"] else "MISS")))
            rows_out.append((f"summary, {name} scan", counts(s["summary"]), "", ""))
        rows_out += [
            ("same record both scans (timing aside)", f"{same} / {len(adapters)}", "all",
             "PASS" if same == len(adapters) else "MISS"),
            ("record SHA-256 = sha256sum", f"{sha_ok} / {len(adapters)}", "all",
             "PASS" if sha_ok == len(adapters) else "MISS"),
            ("fingerprint family = generated family", (f"{fam_ok} / {len(adapters)} ("
             + ", ".join(f"{f} {a}/{b}" for f, (a, b) in sorted(fam_by.items())) + ")"), "", ""),
            ("record order", (f"first scan {'sorted by path' if order1 == sorted(order1, key=str) else 'not sorted'}; "
             f"second {'same order' if order1 == order2 else 'different order'}"), "", ""),
        ]
        for row in rows_out:
            print(" | ".join(row))
        stages: Counter = Counter()
        per_file = []
        for p in adapters:
            rec = by_path1.get(p)
            timing = (rec or {}).get("timing") or {}
            for k, v in timing.items():
                if isinstance(v, (int, float)):
                    stages[k] += v
            if isinstance(timing.get("total"), (int, float)):
                layers = len(rec.get("layers") or []) + int(rec.get("layers_omitted") or 0)
                per_file.append((timing["total"], p, layers))
        if stages:
            busy = stages.get("total", 0.0)
            print(f"worker time by stage, first scan (sum of the records' timing over {len(per_file)} files): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in stages.most_common() if k != "total")
                  + f"; total {busy:.1f} s = {busy / (first['seconds'] * args.jobs):.0%} of wall x jobs")
            by_kind: dict[str, list] = defaultdict(list)
            for secs, p, layers in per_file:
                by_kind[expected[p]["adapter"]].append((secs, expected[p]["size"], layers))
            print("per adapter kind (files: mean s/file, mean MB, mean layers): " + "; ".join(
                f"{k} {len(v)}: {np.mean([x[0] for x in v]):.3f} s, {np.mean([x[1] for x in v]) / 1e6:.1f} MB, "
                f"{np.mean([x[2] for x in v]):.0f}" for k, v in sorted(by_kind.items(), key=lambda kv: -len(kv[1]))))
            secs_arr = np.array([x[0] for x in per_file])
            mb_arr = np.array([expected[x[1]]["size"] / 1e6 for x in per_file])
            lay_arr = np.array([x[2] for x in per_file], dtype=float)
            if len(per_file) > 2:
                print(f"seconds per file: median {np.median(secs_arr):.3f}, p90 {np.percentile(secs_arr, 90):.3f}, max "
                      f"{secs_arr.max():.2f}; correlation with size {np.corrcoef(secs_arr, mb_arr)[0, 1]:.2f}, with "
                      f"layer count {np.corrcoef(secs_arr, lay_arr)[0, 1]:.2f}")
            slow = sorted(per_file, reverse=True)[:5]
            print("slowest: " + "; ".join(
                f"{Path(p).name if expected[p]['fmt'] != 'peft' else Path(p).parent.name} ({expected[p]['family']} "
                f"{expected[p]['fmt']} {expected[p]['adapter']} r{expected[p]['rank']} {expected[p]['dtype']}, "
                f"{expected[p]['size'] / 1e6:.1f} MB, {layers} layers) {secs:.2f} s" for secs, p, layers in slow))
        out_mb = [(work / f"scan{i}.jsonl").stat().st_size / 1e6 if (work / f"scan{i}.jsonl").exists() else 0
                  for i in (1, 2)]
        print(f"JSONL output: {out_mb[0]:.1f} MB (first), {out_mb[1]:.1f} MB (second); cache "
              f"{cache.stat().st_size / 1e6 if cache.exists() else 0:.1f} MB")
        if fam_wrong:
            print(f"family differs ({len(fam_wrong)}):", "; ".join(fam_wrong[:8]) + (" ..." if len(fam_wrong) > 8 else ""))
        errs = Counter(((r.get("error") or {}).get("code") or "?") for r in first["recs"] if r.get("status") != "ok")
        if errs:
            print("error codes, first scan:", dict(errs.most_common(10)))
        failed = not (first["ok"] and second["ok"])
        if failed:
            for s in scans:
                if s["stderr"].strip():
                    print("scan stderr tail:\n" + s["stderr"])
        if keep:
            print(f"kept: files in {root}; records, summaries, cache and manifest in {work}")
    finally:
        if not keep:
            if made_root:
                shutil.rmtree(root, ignore_errors=True)
            else:  # --dir: remove what was written, leave the folder
                for p in list(root.iterdir()):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
