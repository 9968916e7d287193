"""Header-only synthetic adapters for fingerprint tests: real module names and widths, no tensor data.

``lora(modules, fmt)`` spells a list of ``(module path, out, in)`` as a LoRA file of one key format and
returns ``{tensor name: TensorMeta}``, ready for ``audit.fingerprint.identify_tensors``. Module paths are
written in the model's own dotted naming (``double_blocks.0.img_attn.qkv``); the kohya spelling flattens
them. A 4-tuple ``(path, out, in, k)`` makes a k×k conv layer. A component other than the default is given
with a ``te:``/``te1:``/``te2:``/``te3:`` prefix on the path, e.g. ``te:text_model.encoder.layers.0.self_attn.q_proj``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from audit.formats import TensorMeta

_KOHYA_TE = {"te": "lora_te_", "te1": "lora_te1_", "te2": "lora_te2_", "te3": "lora_te3_"}
_PEFT_TE = {"te": "text_encoder.", "te1": "text_encoder.", "te2": "text_encoder_2.", "te3": "text_encoder_3."}
_COMFY_TE = {"te": "text_encoders.clip_l.", "te1": "text_encoders.clip_l.", "te2": "text_encoders.clip_g.",
             "te3": "text_encoders.t5xxl."}


def _split(path: str) -> tuple[str | None, str]:
    head, sep, rest = path.partition(":")
    return (head, rest) if sep else (None, path)


def lora(modules: Iterable[Sequence], fmt: str = "kohya", *, rank: int = 4, denoiser: str = "transformer",
         ) -> dict[str, TensorMeta]:
    """fmt: kohya | peft (diffusers-peft: ``transformer.``/``unet.`` + lora_A/lora_B) | comfy (``diffusion_model.``)."""
    out: dict[str, TensorMeta] = {}
    for m in modules:
        path, o, i = m[0], int(m[1]), int(m[2])
        k = int(m[3]) if len(m) > 3 else None
        comp, mod = _split(path)
        down = (rank, i, k, k) if k else (rank, i)
        up = (o, rank, 1, 1) if k else (o, rank)
        if fmt == "kohya":
            stem = (_KOHYA_TE[comp] if comp else "lora_unet_") + mod.replace(".", "_")
            out[f"{stem}.lora_down.weight"] = TensorMeta("F16", down)
            out[f"{stem}.lora_up.weight"] = TensorMeta("F16", up)
            out[f"{stem}.alpha"] = TensorMeta("F16", ())
        elif fmt == "peft":
            stem = (_PEFT_TE[comp] if comp else f"{denoiser}.") + mod
            out[f"{stem}.lora_A.weight"] = TensorMeta("F16", down)
            out[f"{stem}.lora_B.weight"] = TensorMeta("F16", up)
        elif fmt == "comfy":
            stem = (_COMFY_TE[comp] if comp else "diffusion_model.") + mod
            out[f"{stem}.lora_down.weight"] = TensorMeta("F16", down)
            out[f"{stem}.lora_up.weight"] = TensorMeta("F16", up)
            out[f"{stem}.alpha"] = TensorMeta("F16", ())
        else:
            raise ValueError(f"unknown fmt {fmt!r}")
    return out


def blocks(template: Sequence[tuple[str, int, int]], indices: Iterable[int]) -> list[tuple[str, int, int]]:
    """Repeat ``(path with {i}, out, in)`` entries for each block index."""
    return [(p.format(i=i), o, n) for i in indices for (p, o, n) in template]
