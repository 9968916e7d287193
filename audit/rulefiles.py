"""Reading the YAML knowledge files under rules/ (shipped as the package data ``audit.rules``).

Every rules folder (bases/, licenses/, policies/) and the single files beside them are read the same way: safe
YAML (libyaml when present), with the parsed documents kept as JSON in the user cache, keyed by the exact YAML
texts (parsing YAML costs tens of milliseconds a run; JSON about one). The cache saves parsing, never checking:
each caller validates every document, whatever its origin. ``LORA_AUDIT_NO_CACHE`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from typing import Any

__all__ = ["cache_dir", "package", "read_docs", "rules_version"]


def package():
    """The shipped rules folder (a Traversable)."""
    return resources.files("audit.rules")


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lora-audit")


def _entries(folder) -> list[tuple[str, str]]:
    return [(e.name, e.read_text(encoding="utf-8"))
            for e in sorted(folder.iterdir(), key=lambda e: e.name) if e.name.endswith(".yaml")]


def read_docs(folder, label: str, *, cache: bool = True, names: list[str] | None = None) -> list[tuple[str, Any]]:
    """``(file name, parsed document)`` for every ``*.yaml`` in ``folder`` (or only ``names``), sorted by name.

    ``label`` names the folder in errors (e.g. ``"rules/licenses"``). Raises ValueError for YAML that does not
    parse, naming the file.
    """
    entries = _entries(folder) if names is None else [(n, folder.joinpath(n).read_text(encoding="utf-8"))
                                                      for n in names]
    path = _cache_path(label, entries) if cache else None
    docs = _cached(path, len(entries))
    if docs is None:
        docs = _parse(label, entries)
        if path:
            _save(path, docs)
    return [(name, doc) for (name, _), doc in zip(entries, docs)]


def _parse(label: str, entries: list[tuple[str, str]]) -> list[Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = []
    for name, text in entries:
        try:
            docs.append(yaml.load(text, Loader=loader))
        except yaml.YAMLError as e:
            raise ValueError(f"{label}/{name}: not valid YAML: {e}") from None
    return docs


def _digest(entries: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, text in entries:
        digest.update(f"{len(name)}:{name}{len(text)}:".encode() + text.encode("utf-8"))
    return digest.hexdigest()


def _cache_path(label: str, entries: list[tuple[str, str]]) -> str | None:
    if os.environ.get("LORA_AUDIT_NO_CACHE"):
        return None
    slug = label.replace("rules/", "").replace("/", "-").replace(".", "-") or "rules"
    return os.path.join(cache_dir(), f"{slug}-{_digest(entries)[:32]}.json")


def _cached(path: str | None, n: int) -> list[Any] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            docs = json.load(fh)
    except (OSError, ValueError):
        return None
    return docs if isinstance(docs, list) and len(docs) == n else None


def _save(path: str, docs: list[Any]) -> None:
    """Keep documents that JSON holds exactly (int keys or dates would change on the way back)."""
    try:
        text = json.dumps(docs)
        if json.loads(text) != docs:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass  # a read-only home: parse the YAML every run


@functools.lru_cache(maxsize=1)
def rules_version() -> str:
    """A digest of every shipped rules file (bases, licenses, policies, lineage, regions, findings): part of
    the scan cache key, so a changed rule re-analyses what it may change."""
    entries: list[tuple[str, str]] = []

    def walk(folder, prefix: str) -> None:
        for e in sorted(folder.iterdir(), key=lambda e: e.name):
            if e.is_dir():
                if not e.name.startswith("__"):
                    walk(e, f"{prefix}{e.name}/")
            elif e.name.endswith((".yaml", ".md")):
                entries.append((prefix + e.name, e.read_text(encoding="utf-8")))

    walk(package(), "")
    return _digest(entries)[:16]
