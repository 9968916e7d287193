"""Finding codes (rules/findings.yaml) and the Finding record.

Analysers create findings with :func:`make`; the code must exist in the catalogue, so a typo fails loudly in
tests rather than producing an undocumented code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    where: str | None = None


@dataclass(frozen=True)
class FindingCode:
    code: str
    severity: str
    title: str


def _yaml():
    import yaml  # local: only needed when the catalogue is first read

    return yaml


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, FindingCode]:
    """All finding codes, validated when loaded."""
    text = resources.files("audit.rules").joinpath("findings.yaml").read_text(encoding="utf-8")
    yaml = _yaml()
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
    if not isinstance(data, dict) or not isinstance(data.get("findings"), dict):
        raise ValueError("rules/findings.yaml: top-level 'findings' mapping missing")
    out: dict[str, FindingCode] = {}
    for code, entry in data["findings"].items():
        if not (isinstance(code, str) and len(code) == 5 and code.startswith("LA") and code[2:].isdigit()):
            raise ValueError(f"rules/findings.yaml: bad code {code!r}")
        if not isinstance(entry, dict) or entry.get("severity") not in SEVERITY_RANK or not entry.get("title"):
            raise ValueError(f"rules/findings.yaml: {code} needs a severity in {SEVERITIES} and a title")
        out[code] = FindingCode(code, entry["severity"], str(entry["title"]))
    return out


def make(code: str, message: str | None = None, where: str | None = None, severity: str | None = None) -> Finding:
    """Create a finding; the message defaults to the catalogue title."""
    entry = catalogue()[code]
    return Finding(code=code, severity=severity or entry.severity, message=message or entry.title, where=where)


def at_or_above(findings, threshold: str) -> list[Finding]:
    rank = SEVERITY_RANK[threshold]
    return [f for f in findings if SEVERITY_RANK[f.severity] >= rank]


def select(findings, select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> list[Finding]:
    """ruff-style selection: a prefix such as ``LA2`` or a full code."""
    def hit(code: str, prefixes) -> bool:
        return any(code.startswith(p) for p in prefixes)

    out = [f for f in findings if not select or hit(f.code, select)]
    return [f for f in out if not hit(f.code, ignore)]
