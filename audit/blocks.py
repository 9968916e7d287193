"""Where a LoRA acts: map each layer to a block of its base model and sum strength per block.

Block ids are uniform across key formats:
  SD UNets   ``down.N`` / ``mid`` / ``up.N`` (diffusers names; SGM ``input_blocks``/``output_blocks`` of
             sd-scripts SDXL files are mapped to the same levels), ``unet.other`` for conv_in, time embedding…
  text       ``te``, ``te1``, ``te2``, ``te3`` (one block per text encoder)
  FLUX-like  ``double.N`` / ``single.N`` (BFL double_blocks/single_blocks; diffusers transformer_blocks /
             single_transformer_blocks)
  other DiTs ``block.N`` (joint_blocks, blocks, layers, transformer_blocks …)
  otherwise  ``embedding``, ``other``
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from audit.record import BlockRecord, LayerRecord

_SEP = r"[._]"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?:^|{_SEP})down_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "down"),
    (re.compile(rf"(?:^|{_SEP})up_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "up"),
    (re.compile(rf"(?:^|{_SEP})mid_block(?:{_SEP}|$)"), "mid"),
    (re.compile(rf"(?:^|{_SEP})input_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "sgm-in"),
    (re.compile(rf"(?:^|{_SEP})output_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "sgm-out"),
    (re.compile(rf"(?:^|{_SEP})middle_block(?:{_SEP}|$)"), "mid"),
    (re.compile(rf"(?:^|{_SEP})single_transformer_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "single"),
    (re.compile(rf"(?:^|{_SEP})single_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "single"),
    (re.compile(rf"(?:^|{_SEP})double_blocks{_SEP}(\d+)(?:{_SEP}|$)"), "double"),
    (re.compile(rf"(?:^|{_SEP})(?:single_layers|single_stream_blocks){_SEP}(\d+)(?:{_SEP}|$)"), "single"),
    (re.compile(rf"(?:^|{_SEP})(?:double_layers|double_stream_blocks|joint_transformer_blocks){_SEP}(\d+)(?:{_SEP}|$)"), "double"),
    (re.compile(rf"(?:^|{_SEP})(?:joint_blocks|transformer_blocks|blocks|layers){_SEP}(\d+)(?:{_SEP}|$)"), "block"),
]
_TEXT = {"te", "te1", "te2", "te3", "prior_te"}


def block_of(component: str, module: str, *, flux_like: bool) -> tuple[str, str, int | None]:
    """(block id, group, index) of one layer.

    ``flux_like`` says the file has separate single-stream blocks, so diffusers ``transformer_blocks`` are
    the double-stream blocks of a FLUX-style model rather than generic DiT blocks.
    """
    if component in _TEXT:
        return component, component, None
    if component == "embedding":
        return "embedding", "embedding", None
    for pattern, group in _PATTERNS:
        m = pattern.search(module)
        if not m:
            continue
        index = int(m.group(1)) if m.groups() else None
        if group == "sgm-in":  # SGM: input_blocks 0 = conv_in, then 3 entries per level (2 res/attn + downsample)
            if index == 0:
                return "unet.other", "other", None
            group, index = "down", (index - 1) // 3
        elif group == "sgm-out":  # 3 entries per level, deepest level first
            group, index = "up", index // 3
        elif group == "block" and flux_like and "transformer_blocks" in module:
            group = "double"
        if group == "mid":
            return "mid", "mid", None
        return f"{group}.{index}", group, index
    if component in ("unet", "prior_unet"):
        return "unet.other", "other", None
    return "other", "other", None


def is_weight_delta(layer: LayerRecord) -> bool:
    """Whether a layer's Frobenius norm is an absolute weight delta that adds into block and file strength.

    Relative operators (OFT/BOFT), base-dependent kinds and textual-inversion embeddings (stored vectors, not
    deltas) are shown per layer but never summed into strength.
    """
    return (layer.fro is not None and math.isfinite(layer.fro) and layer.kind != "textual-inversion"
            and layer.delta_basis in ("exact", "exact-partial"))


def is_flux_like(modules: list[str]) -> bool:
    return any(("single_transformer_blocks" in m or "single_blocks" in m) for m in modules)


_GROUP_ORDER = {g: i for i, g in enumerate(
    ["te", "te1", "te2", "te3", "prior_te", "down", "mid", "up", "double", "single", "block", "other", "embedding"])}


def summarise(layers: list[LayerRecord]) -> list[BlockRecord]:
    """Per-block strength from layer records (which already carry their block ids)."""
    energy: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    spectral: dict[str, float] = defaultdict(float)
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    meta: dict[str, tuple[str, int | None]] = {}
    for layer in layers:
        b = layer.block
        count[b] += 1
        kinds[b][layer.kind] += 1
        if is_weight_delta(layer):
            energy[b] += layer.fro * layer.fro
            spectral[b] = max(spectral[b], layer.spectral or 0.0)
        group, _, rest = b.partition(".")
        meta[b] = (group if group != "unet" else "other", int(rest) if rest.isdigit() else None)
    total = sum(energy.values())
    out = [
        BlockRecord(
            id=b,
            group=meta[b][0],
            index=meta[b][1],
            layers=count[b],
            strength=math.sqrt(energy[b]),
            energy_share=(energy[b] / total) if total > 0 else 0.0,
            max_spectral=spectral[b],
            kinds=dict(sorted(kinds[b].items())),
        )
        for b in count
    ]
    out.sort(key=lambda r: (_GROUP_ORDER.get(r.group, 99), r.index if r.index is not None else -1, r.id))
    return out
