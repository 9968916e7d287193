"""Adapter kinds: one module per kind, each exposing ``ADAPTER`` (see base.Adapter).

Adding a kind means adding one module and naming it in ``_MODULES``; detection asks each kind, in priority
order, whether the roles it is identified by are present (LyCORIS ``weight_list_det``).
"""

from __future__ import annotations

import functools
import importlib

from audit.adapters.base import Adapter, LayerGroup

_MODULES = (
    "dora",
    "lora_tucker",
    "locon",
    "lora",
    "loha",
    "lokr",
    "full",
    "ia3",
    "oft",
    "boft",
    "glora",
    "norm",
    "textual_inversion",
)


@functools.lru_cache(maxsize=1)
def registry() -> tuple[Adapter, ...]:
    kinds = [importlib.import_module(f"audit.adapters.{m}").ADAPTER for m in _MODULES]
    return tuple(sorted(kinds, key=lambda a: a.priority))


def by_kind(kind: str) -> Adapter:
    for a in registry():
        if a.kind == kind:
            return a
    raise KeyError(kind)


def detect(group: LayerGroup, shapes: dict[str, tuple[int, ...]]) -> Adapter | None:
    """The adapter kind of a layer group, or None when no kind claims its roles.

    ``shapes`` maps each role of the group to its tensor shape (locon/lora differ only by rank-4 factors).
    """
    roles = set(group.parts)
    for a in registry():
        accepts = getattr(a, "accepts", None)
        if a.detects & roles and (accepts is None or accepts(roles, shapes)):
            return a
    return None
