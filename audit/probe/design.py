"""The probe's experimental design: neutral subjects × style-free templates × seeds × trigger arms.

Every LoRA image is paired with the base image of the same (subject, template, seed, trigger arm): same prompt,
same per-image seed. The cluster of a pair is its subject (images of one subject are correlated), which is the
unit the statistics resample and flip. See ../shared/reference/probe-science.md §2.1 for the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

# Neutral subjects spread over categories, so that style is not confounded with content (style mode).
STYLE_SUBJECTS = (
    "an apple", "a teapot", "a bicycle", "a lighthouse", "a mountain lake", "a city street", "a cat", "a horse",
    "a chair", "a sailboat", "a bowl of fruit", "a forest path", "an old man", "a young woman", "a bridge",
    "a castle", "a violin", "a windmill", "a dog", "a vase of flowers", "a train", "a cottage", "a tree", "a boat",
)
# Person-neutral subjects (likeness mode): the person is the variable, the scene is not.
LIKENESS_SUBJECTS = (
    "a person", "a portrait of a person", "a person reading a book", "a person walking on a beach",
    "a person smiling", "a person in a park", "a person sitting at a table", "a person looking at the camera",
    "a person in a city street", "a person wearing a hat", "a person by a window", "a person in a garden",
    "a person holding a cup", "a person riding a bicycle", "a person in a kitchen", "a person on a bench",
)
# Templates that carry no style and no medium ("painting", "photo" would pull both arms towards a medium).
TEMPLATES = ("{subject}", "a picture of {subject}", "{subject}, high quality")
STYLE_WORDS = ("painting", "photo", "photograph", "drawing", "sketch", "render", "style", "art", "artist",
               "illustration", "anime", "watercolor", "oil")

QUICK = {"subjects": 8, "templates": 1, "seeds": (0, 1)}
FULL = {"subjects": 16, "templates": 2, "seeds": (0, 1)}


@dataclass(frozen=True)
class ProbeItem:
    """One pair: the base image and the LoRA image are generated from exactly this prompt and seed."""

    index: int
    subject: str
    template: str
    seed: int
    arm: str  # "trigger" | "plain"
    prompt: str
    cluster: int  # subject index: the resampling and sign-flip unit


def prompt_for(subject: str, template: str, trigger: str | None) -> str:
    text = template.format(subject=subject)
    return f"{text}, {trigger}" if trigger else text


def plan(mode: str = "style", *, trigger: str | None = None, quick: bool = False, subjects: int | None = None,
         templates: int | None = None, seeds: tuple[int, ...] | None = None) -> list[ProbeItem]:
    """The pairs to generate, arm by arm: with the trigger (when one is known) and without it."""
    if mode not in ("style", "likeness"):
        raise ValueError("mode must be 'style' or 'likeness'")
    defaults = QUICK if quick else FULL
    pool = STYLE_SUBJECTS if mode == "style" else LIKENESS_SUBJECTS
    n_subjects = subjects if subjects is not None else defaults["subjects"]
    n_templates = templates if templates is not None else defaults["templates"]
    seed_list = tuple(seeds if seeds is not None else defaults["seeds"])
    if not 1 <= n_subjects <= len(pool):
        raise ValueError(f"subjects must be between 1 and {len(pool)}")
    if not 1 <= n_templates <= len(TEMPLATES):
        raise ValueError(f"templates must be between 1 and {len(TEMPLATES)}")
    if not seed_list or len(set(seed_list)) != len(seed_list) or any(s < 0 for s in seed_list):
        raise ValueError("seeds must be distinct non-negative integers")
    trigger = trigger.strip() if trigger else None
    arms = (("trigger", trigger), ("plain", None)) if trigger else (("plain", None),)
    items: list[ProbeItem] = []
    for arm, word in arms:
        for c, subject in enumerate(pool[:n_subjects]):
            for template in TEMPLATES[:n_templates]:
                for seed in seed_list:
                    items.append(ProbeItem(len(items), subject, template, seed, arm,
                                           prompt_for(subject, template, word), c))
    return items


def min_detectable_dz(n_pairs: int, alpha: float = 0.01, power: float = 0.9) -> float:
    """The smallest paired effect d_z a one-sided test at ``alpha`` detects with ``power`` for ``n_pairs``
    (normal approximation: n ≈ ((z_α + z_β) / d_z)²)."""
    from statistics import NormalDist

    if n_pairs < 2:
        return float("inf")
    z = NormalDist().inv_cdf
    return (z(1 - alpha) + z(power)) / n_pairs ** 0.5
