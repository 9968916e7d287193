"""Image embedders behind one interface: ``embed(images) -> float64 array [n, d]``.

* :class:`OpenClipEmbedder`: open_clip with local weights only. ``model`` is an open_clip architecture name
  (``ViT-L-14``) with ``weights`` a local checkpoint file, or a ``local-dir:`` folder holding
  ``open_clip_config.json`` and its weights. Nothing is ever fetched: a name without local weights is refused.
* A face embedder for likeness is used when the ``face_recognition`` package (and its models) is installed;
  otherwise likeness falls back to CLIP, and the probe says so in its warnings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_REFERENCE_IMAGES = 2000
MAX_IMAGE_PIXELS = 64_000_000  # a reference image larger than this is refused (decompression bombs)


class Embedder(Protocol):
    name: str

    def embed(self, images: list) -> np.ndarray: ...


class OpenClipEmbedder:
    def __init__(self, model: str, weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        import open_clip
        import torch

        if model.startswith("local-dir:"):
            folder = model[len("local-dir:"):]
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"open_clip folder not found: {folder}")
            self._model, _, self._preprocess = open_clip.create_model_and_transforms(model, device=device)
        else:
            if not weights or not os.path.isfile(weights):
                raise FileNotFoundError("--clip-weights must name a local checkpoint file for "
                                        f"{model!r} (lora-audit never downloads weights)")
            self._model, _, self._preprocess = open_clip.create_model_and_transforms(model, pretrained=weights,
                                                                                     device=device)
        self._model.eval()
        self._torch = torch
        self.device = device
        self.batch_size = batch_size
        self.name = f"clip:{Path(model.split(':', 1)[-1]).name if model.startswith('local-dir:') else model}"

    def embed(self, images: list) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack([self._preprocess(im.convert("RGB")) for im in images[start:start + self.batch_size]])
                feats = self._model.encode_image(batch.to(self.device))
                out.append(feats.float().cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, 0))


def load_images(folder: str | os.PathLike) -> tuple[list, list[str]]:
    """The images in ``folder`` (not recursive; sorted by name), as RGB PIL images, and their names. Files that
    are not images, or cannot be decoded, are skipped; a folder with none is an error."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    images, names = [], []
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or path.is_symlink():
                continue
            try:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            names.append(path.name)
            if len(images) >= MAX_REFERENCE_IMAGES:
                break
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if not images:
        raise ValueError(f"no readable images in {folder}")
    return images, names
