"""The license chain of an adapter and the verdict of deployment policies. Not legal advice.

Knowledge is data (rules/licenses/SCHEMA.md):

* ``rules/licenses/<id>.yaml`` — one file per license text version: grants, conditions, obligations, output
  restrictions, what binds derivatives, each with the clause it rests on and the text's URL;
* ``rules/lineage.yaml`` — which licenses each base family or variant passes on (base, intermediate fine-tunes,
  components);
* ``rules/regions.yaml`` — region groups used by territory clauses (EU);
* ``rules/policies/<id>.yaml`` — deployment policies: rules written as small expressions over the license, the
  deployer's facts (``context``) and the adapter's own claims (``lora``).

Which base the adapter descends from (its *lineages*) comes, in this order, from what the user asserts
(``--assume-base``), from the adapter's own lineage claims when the tensors allow them (basis ``claimed``), or
from every candidate the tensors cannot rule out (basis ``candidates``). A policy is evaluated for each lineage
and the verdict takes the strictest: deny > needs-review > allow-with-conditions > allow.

Policy expressions are a small, safe subset of Python syntax, parsed with :mod:`ast` and interpreted here (never
``eval``): literals, lists, ``and``/``or``/``not``, comparisons, ``in``, attribute paths from the roots
``license``, ``item``, ``context``, ``lora`` and ``lineage``, and the functions ``compare``, ``intersects``,
``known``, ``len`` and ``lower``. Logic is three-valued: a deployer fact that was not given (``null`` in
``context``) is *unknown*, and a rule whose condition is unknown takes its ``if_unknown`` action (usually
``review``: "give --revenue").
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit import rulefiles
from audit.findings import Finding, make
from audit.record import (
    VERDICTS,
    AuditRecord,
    ChainLink,
    LicenseClaim,
    LicenseRef,
    Licensing,
    Lineage,
    PolicyVerdict,
    Reason,
)

__all__ = [
    "VERDICTS",
    "Knowledge",
    "Policy",
    "PolicyError",
    "Settings",
    "apply",
    "base_ids",
    "knowledge",
    "load_policy",
    "resolve_license",
    "settings_key",
    "shipped_policies",
]

_ACTION_VERDICT = {"note": "allow", "condition": "allow-with-conditions", "review": "needs-review", "deny": "deny"}
_VERDICT_FINDING = {"deny": "LA400", "needs-review": "LA401", "allow-with-conditions": "LA402"}
ACTIONS = tuple(_ACTION_VERDICT)
ROLES = ("base", "intermediate", "component", "lora_author")
RULE_TARGETS = (*ROLES, "adapter")  # "adapter": once per lineage, with no license bound
LIST_FIELDS = ("conditions", "obligations", "output_restrictions")
GRANT_KEYS = ("model_commercial", "output_commercial", "hosted_service", "redistribution")
GRANT_VALUES = {
    "model_commercial": ("yes", "no", "conditional", "unknown"),
    "output_commercial": ("yes", "no", "conditional", "unclear", "unknown"),
    "hosted_service": ("yes", "no", "conditional", "unknown"),
    "redistribution": ("yes", "no", "conditional", "unknown"),
}
_GRANT_RANK = {"no": 0, "unknown": 1, "unclear": 1, "conditional": 2, "yes": 3}
LEVELS = ("P", "P-tag", "S", "U")
#: metadata keys (lower case) whose value is a license statement about the adapter itself
ARCH_CLAIM_KEYS = frozenset({"modelspec.architecture", "ss_base_model_version", "ss_v2", "sd version"})
DISCLAIMER = ("Not legal advice: a summary of license texts to help a human review, citing the text, version and "
              "URL each fact rests on.")
MAX_POLICY_BYTES = 1 << 20
MAX_EXPR_CHARS = 2000
MAX_EXPR_NODES = 400


class PolicyError(ValueError):
    """A rules or policy file that does not validate; the message names the file and the problem."""


def _need(cond: object, where: str, what: str) -> None:
    if not cond:
        raise PolicyError(f"{where}: {what}")


# ---------------------------------------------------------------------------------------------------------
# licenses, lineage, regions


@dataclass(frozen=True)
class License:
    id: str
    family: str
    name: str
    version: str | None
    published: str | None
    url: str | None
    level: str
    spdx: str | None
    spdx_ref: str | None
    aliases: tuple[str, ...]
    titles: tuple[re.Pattern, ...]
    data: Mapping[str, Any]  # the validated document, as policy expressions see it

    def ref(self) -> LicenseRef:
        return LicenseRef(id=self.id, name=self.name, version=self.version, published=self.published,
                          url=self.url, level=self.level, spdx=self.spdx or self.spdx_ref)


@dataclass(frozen=True)
class LineageEntry:
    id: str
    chain: tuple[tuple[str, str], ...]  # (license id, role)
    source: str
    note: str | None


@dataclass(frozen=True)
class Knowledge:
    licenses: Mapping[str, License]
    aliases: Mapping[str, str]  # normalised alias -> license id
    urls: Mapping[str, str]  # normalised URL -> license id
    lineage: Mapping[str, LineageEntry]
    regions: Mapping[str, frozenset[str]]


_LICENSE_KEYS = {
    "schema", "id", "family", "name", "version", "published", "supersedes", "spdx", "spdx_ref", "url", "mirrors",
    "level", "checked", "aliases", "title_patterns", "grant", "conditions", "obligations", "output_restrictions",
    "derivatives", "use_restrictions", "commercial_license", "notes", "open_questions",
}
_CONDITION_KINDS = {"revenue_ceiling", "mau_ceiling", "muu_ceiling", "core_business", "registration",
                    "territory_exclusion", "non_production_only", "no_monetized_inference", "research_only"}
_OBLIGATION_KINDS = {"flow_down_use_restrictions", "provide_license_copy", "notice_file", "display_attribution",
                     "mark_modifications", "content_filter_or_review", "ai_disclosure", "keep_guardrails",
                     "provide_source", "register_with_licensor", "aup_compliance", "keep_notices"}
_OUTPUT_KINDS = {"no_training_competing_models", "no_training_foundational_models", "no_improving_other_models",
                 "territory", "must_follow_aup", "no_commercial_use"}
_TRIGGERS = {"use", "distribution", "hosted_service", "commercial_use", "outputs"}
_KINDS = {"conditions": _CONDITION_KINDS, "obligations": _OBLIGATION_KINDS, "output_restrictions": _OUTPUT_KINDS}


def normalise_alias(text: str) -> str:
    """Case-folded, with runs of space, ``_``, ``-`` and ``.`` collapsed to one ``-`` (rules/licenses/SCHEMA.md)."""
    return re.sub(r"[\s_.\-]+", "-", text.strip().casefold()).strip("-")


def _normalise_url(text: str) -> str:
    t = text.strip().casefold()
    t = re.sub(r"^https?://(www\.)?", "", t)
    return t.rstrip("/")


def _head(doc: Any, where: str, schema: str, keys: set[str]) -> str:
    """Check a rules document's schema tag and fields; its kebab-case id."""
    _need(isinstance(doc, dict), where, "must be a mapping")
    _need(doc.get("schema") == schema, where, f"schema must be {schema}")
    extra = set(doc) - keys
    _need(not extra, where, f"unknown field(s) {sorted(extra)}")
    ident = doc.get("id")
    _need(isinstance(ident, str) and re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", ident or ""), where,
          "id must be kebab-case")
    return ident


def _license(doc: Any, name: str, regions: Mapping[str, frozenset[str]]) -> License:
    where = f"rules/licenses/{name}"
    lid = _head(doc, where, "lora-audit/license/v1", _LICENSE_KEYS)
    _need(name == f"{lid}.yaml", where, f"id {lid!r} must equal the file name")
    for key in ("family", "name"):
        _need(isinstance(doc.get(key), str) and doc[key], where, f"{key} must be a non-empty string")
    _need(doc.get("level") in LEVELS, where, f"level must be one of {LEVELS}")
    for key in ("version", "published", "spdx", "spdx_ref", "url"):
        _need(doc.get(key) is None or isinstance(doc.get(key), str), where, f"{key} must be a string or null")
    grant = doc.get("grant")
    _need(isinstance(grant, dict) and set(grant) == set(GRANT_KEYS), where, f"grant needs exactly {GRANT_KEYS}")
    for key, allowed in GRANT_VALUES.items():
        _need(grant[key] in allowed, where, f"grant.{key} must be one of {allowed} (quote yes/no in YAML)")
    for list_key in LIST_FIELDS:
        entries = doc.get(list_key) or []
        _need(isinstance(entries, list), where, f"{list_key} must be a list")
        for i, e in enumerate(entries):
            w = f"{where} {list_key}[{i}]"
            _need(isinstance(e, dict), w, "must be a mapping")
            _need(e.get("kind") in _KINDS[list_key], w, f"kind must be one of {sorted(_KINDS[list_key])}")
            _need(isinstance(e.get("clause"), str) and e["clause"], w, "needs the clause it rests on")
            trig = e.get("trigger")
            if trig is not None:
                trig = [trig] if isinstance(trig, str) else trig
                _need(isinstance(trig, list) and set(trig) <= _TRIGGERS, w, f"trigger must be among {sorted(_TRIGGERS)}")
                e["trigger"] = list(trig)
            for r in e.get("regions") or []:
                _need(isinstance(r, str) and (r in regions or re.fullmatch(r"[A-Z]{2}", r)), w,
                      f"region {r!r} must be an ISO-3166 alpha-2 code or a group in rules/regions.yaml")
            if "amount" in e:
                _need(isinstance(e["amount"], (int, float)) and not isinstance(e["amount"], bool), w,
                      "amount must be a number")
            if "comparison" in e:
                _need(e["comparison"] in ("gt", "gte"), w, "comparison must be gt or gte")
    deriv = doc.get("derivatives")
    _need(isinstance(deriv, dict), where, "derivatives must be a mapping")
    _need(deriv.get("inheritance") in ("same_license", "restrictions_flow", "copyleft", "free"), where,
          "derivatives.inheritance must be same_license | restrictions_flow | copyleft | free")
    aliases = doc.get("aliases") or []
    _need(isinstance(aliases, list) and all(isinstance(a, str) and a.strip() for a in aliases), where,
          "aliases must be a list of strings")
    titles = []
    for t in doc.get("title_patterns") or []:
        try:
            titles.append(re.compile(t, re.IGNORECASE))
        except (re.error, TypeError) as e:
            raise PolicyError(f"{where}: title pattern {t!r} does not compile: {e}") from None
    return License(id=lid, family=doc["family"], name=doc["name"], version=doc.get("version"),
                   published=doc.get("published"), url=doc.get("url"), level=doc["level"], spdx=doc.get("spdx"),
                   spdx_ref=doc.get("spdx_ref"), aliases=tuple(aliases), titles=tuple(titles), data=doc)


@functools.lru_cache(maxsize=1)
def knowledge() -> Knowledge:
    """The shipped licenses, lineage map and regions, validated (cached per process)."""
    pkg = rulefiles.package()
    regions: dict[str, frozenset[str]] = {}
    for name, doc in rulefiles.read_docs(pkg, "rules", names=["regions.yaml"]):
        _need(isinstance(doc, dict) and doc.get("schema") == "lora-audit/regions/v1", f"rules/{name}",
              "schema must be lora-audit/regions/v1")
        for rid, entry in (doc.get("regions") or {}).items():
            members = entry.get("members") if isinstance(entry, dict) else None
            _need(isinstance(members, list) and all(isinstance(m, str) for m in members), f"rules/{name} {rid}",
                  "members must be a list of ISO codes")
            regions[str(rid).upper()] = frozenset(m.upper() for m in members)
    licenses: dict[str, License] = {}
    aliases: dict[str, str] = {}
    urls: dict[str, str] = {}
    for name, doc in rulefiles.read_docs(pkg.joinpath("licenses"), "rules/licenses"):
        lic = _license(doc, name, regions)
        _need(lic.id not in licenses, f"rules/licenses/{name}", "duplicate id")
        licenses[lic.id] = lic
        for a in (*lic.aliases, lic.id, lic.spdx or "", lic.spdx_ref or ""):
            key = normalise_alias(a)
            if not key:
                continue
            _need(aliases.get(key, lic.id) == lic.id, f"rules/licenses/{name}",
                  f"alias {a!r} also names {aliases.get(key)}")
            aliases[key] = lic.id
        for u in (lic.url, *(doc.get("mirrors") or [])):
            if isinstance(u, str) and u:
                urls.setdefault(_normalise_url(u), lic.id)
    _need("unknown" in licenses, "rules/licenses", "an unknown.yaml entry is required")
    for lic in licenses.values():
        for sup in lic.data.get("supersedes") or []:
            _need(sup in licenses, f"rules/licenses/{lic.id}.yaml", f"supersedes unknown license {sup!r}")
    lineage: dict[str, LineageEntry] = {}
    for name, doc in rulefiles.read_docs(pkg, "rules", names=["lineage.yaml"]):
        where = f"rules/{name}"
        _need(isinstance(doc, dict) and doc.get("schema") == "lora-audit/lineage/v1", where,
              "schema must be lora-audit/lineage/v1")
        for bid, entry in (doc.get("bases") or {}).items():
            w = f"{where} {bid}"
            _need(isinstance(entry, dict) and isinstance(entry.get("chain"), list) and entry["chain"], w,
                  "needs a non-empty chain")
            chain = []
            for link in entry["chain"]:
                _need(isinstance(link, dict) and link.get("license") in licenses, w,
                      f"chain names unknown license {link.get('license') if isinstance(link, dict) else link!r}")
                _need(link.get("role", "base") in ("base", "intermediate", "component"), w, "bad role")
                chain.append((link["license"], link.get("role", "base")))
            _need(isinstance(entry.get("source"), str) and entry["source"], w, "needs a source")
            lineage[str(bid)] = LineageEntry(id=str(bid), chain=tuple(chain), source=entry["source"],
                                             note=entry.get("note"))
    return Knowledge(licenses=licenses, aliases=aliases, urls=urls, lineage=lineage, regions=regions)


def resolve_license(value: str, know: Knowledge | None = None) -> str | None:
    """The license id a statement names: an alias, SPDX id or id; the URL of a known text; or a license text
    whose first line matches a title pattern. None when it names none."""
    know = know or knowledge()
    text = value.strip()
    if not text:
        return None
    hit = know.aliases.get(normalise_alias(text[:300]))
    if hit:
        return hit
    if re.match(r"(?i)^https?://", text):
        return know.urls.get(_normalise_url(text))
    head = [line.strip()[:300] for line in text.splitlines()[:40] if line.strip()][:5]  # a title may follow
    for lic in know.licenses.values():                                                # a copyright line
        if any(p.search(line) for p in lic.titles for line in head):
            return lic.id
    return None


def _bases():
    from audit import fingerprint

    return fingerprint.load_rules()


def base_ids() -> dict[str, str]:
    """Every base id ``--assume-base`` accepts (family and variant ids) -> its family id."""
    out: dict[str, str] = {}
    for fam in _bases().values():
        out[fam.id] = fam.id
        for v in fam.variants:
            out[v.id] = fam.id
    return out


# ---------------------------------------------------------------------------------------------------------
# the expression language


class _UnknownType:
    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "unknown"


UNKNOWN = _UnknownType()
_ROOTS = ("license", "item", "context", "lora", "lineage")
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_FUNCS = ("compare", "intersects", "known", "len", "lower")
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq, ast.NotEq,
            ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load, ast.Attribute, ast.Constant,
            ast.List, ast.Tuple, ast.Call)


@functools.lru_cache(maxsize=4096)
def compile_expr(text: str) -> ast.Expression:
    """Parse and check one policy expression; raises PolicyError for anything outside the language."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_EXPR_CHARS:
        raise PolicyError(f"expression must be a non-empty string of at most {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(" ".join(text.split()), mode="eval")
    except SyntaxError as e:
        raise PolicyError(f"expression {text!r} does not parse: {e.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPR_NODES:
        raise PolicyError(f"expression {text!r} is too long ({len(nodes)} nodes)")
    for node in nodes:
        if not isinstance(node, _ALLOWED):
            raise PolicyError(f"expression {text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
            raise PolicyError(f"expression {text!r}: only string, number, boolean and null literals")
        if isinstance(node, ast.Attribute) and (node.attr.startswith("_") or _path(node) is None):
            raise PolicyError(f"expression {text!r}: attributes only on paths from {', '.join(_ROOTS)}, "
                              "never private ones")
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS) or node.keywords:
                raise PolicyError(f"expression {text!r}: only the functions {', '.join(_FUNCS)} may be called")
        if isinstance(node, ast.Name) and node.id not in _ROOTS and node.id not in _LITERAL_NAMES \
                and node.id not in _FUNCS:
            raise PolicyError(f"expression {text!r}: unknown name {node.id!r} (roots: {', '.join(_ROOTS)})")
    return tree


class _Env:
    __slots__ = ("regions", "roots")

    def __init__(self, roots: dict[str, Any], regions: Mapping[str, frozenset[str]]):
        self.roots = roots
        self.regions = regions


def _path(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in _ROOTS:
        parts.append(node.id)
        return parts[::-1]
    return None


def lookup(roots: Mapping[str, Any], parts: Sequence[str]) -> Any:
    """Follow an attribute path; a deployer fact (``context.*``) that is null is UNKNOWN."""
    value: Any = roots.get(parts[0])
    for p in parts[1:]:
        if value is UNKNOWN:
            return UNKNOWN
        value = value.get(p) if isinstance(value, Mapping) else None
    if value is None and parts[0] == "context":
        return UNKNOWN
    return value


def _truth(v: Any) -> Any:
    return UNKNOWN if v is UNKNOWN else bool(v)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _cmp(op: ast.cmpop, a: Any, b: Any) -> Any:
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    if isinstance(op, ast.Eq):
        return a == b
    if isinstance(op, ast.NotEq):
        return a != b
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(b, (list, tuple, str)):
            return isinstance(op, ast.NotIn)
        if isinstance(b, str) and not isinstance(a, str):
            return UNKNOWN
        hit = a in b
        return hit if isinstance(op, ast.In) else not hit
    if not ((_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str))):
        return UNKNOWN
    if isinstance(op, ast.Lt):
        return a < b
    if isinstance(op, ast.LtE):
        return a <= b
    if isinstance(op, ast.Gt):
        return a > b
    return a >= b


def _expand(values: Any, regions: Mapping[str, frozenset[str]]) -> set[str]:
    out: set[str] = set()
    for v in values if isinstance(values, (list, tuple)) else [values]:
        if isinstance(v, str):
            code = v.strip().upper()
            code = "GB" if code == "UK" else code
            out |= regions.get(code, frozenset({code}))
    return out


def _call(name: str, args: list[Any], env: _Env) -> Any:
    if name == "known":
        return all(a is not UNKNOWN for a in args)
    if any(a is UNKNOWN for a in args):
        return UNKNOWN
    if name == "compare":
        if len(args) != 3:
            raise PolicyError("compare(a, op, b) takes three arguments")
        a, op, b = args
        if not (_num(a) and _num(b)):
            return UNKNOWN
        ops = {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b, "eq": a == b}
        return ops.get(op, UNKNOWN)
    if name == "intersects":
        if len(args) != 2:
            raise PolicyError("intersects(a, b) takes two arguments")
        return bool(_expand(args[0], env.regions) & _expand(args[1], env.regions))
    if name == "len":
        return len(args[0]) if isinstance(args[0], (list, tuple, str, dict)) else 0
    if name == "lower":
        return args[0].lower() if isinstance(args[0], str) else args[0]
    raise PolicyError(f"unknown function {name}")


def evaluate(node: ast.AST, env: _Env) -> Any:
    if isinstance(node, ast.Expression):
        return evaluate(node.body, env)
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        result: Any = is_and
        for v in node.values:
            t = _truth(evaluate(v, env))
            if t is UNKNOWN:
                result = UNKNOWN
            elif t is (not is_and):
                return t
        return result
    if isinstance(node, ast.UnaryOp):
        t = _truth(evaluate(node.operand, env))
        return UNKNOWN if t is UNKNOWN else not t
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env)
        result = True
        for op, comp in zip(node.ops, node.comparators):
            right = evaluate(comp, env)
            r = _cmp(op, left, right)
            if r is UNKNOWN:
                result = UNKNOWN
            elif not r:
                return False
            left = right
        return result
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _LITERAL_NAMES:
            return _LITERAL_NAMES[node.id]
        return lookup(env.roots, [node.id])
    if isinstance(node, ast.Attribute):
        parts = _path(node)
        if parts is None:
            base = evaluate(node.value, env)
            return base.get(node.attr) if isinstance(base, Mapping) else (UNKNOWN if base is UNKNOWN else None)
        return lookup(env.roots, parts)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [evaluate(e, env) for e in node.elts]
    if isinstance(node, ast.Call):
        return _call(node.func.id, [evaluate(a, env) for a in node.args], env)
    raise PolicyError(f"{type(node).__name__} is not allowed")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


def _check_template(text: Any, where: str) -> None:
    _need(text is None or (isinstance(text, str) and len(text) <= 2000), where, "messages must be strings")
    for m in _PLACEHOLDER.finditer(text or ""):
        root = m.group(1).split(".")[0]
        _need(root in _ROOTS, where, f"placeholder {{{m.group(1)}}} must start with one of {_ROOTS}")
        _need(not any(p.startswith("_") for p in m.group(1).split(".")), where, "private attribute in template")


def _show(v: Any) -> str:
    if v is None or v is UNKNOWN:
        return "unknown"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() else f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_show(x) for x in v) or "none"
    if isinstance(v, Mapping):
        return "…"
    return str(v)


def render_template(text: str | None, roots: Mapping[str, Any]) -> str | None:
    """Fill ``{root.path}`` placeholders; plain string substitution (no format-string evaluation)."""
    if text is None:
        return None
    def fill(m: re.Match) -> str:
        parts = m.group(1).split(".")
        if parts[0] not in _ROOTS or any(p.startswith("_") for p in parts):
            return m.group(0)
        return _show(lookup(roots, parts))

    out = _PLACEHOLDER.sub(fill, text)
    return " ".join(out.split())


# ---------------------------------------------------------------------------------------------------------
# policies


@dataclass(frozen=True)
class Rule:
    id: str
    applies_to: tuple[str, ...]
    for_each: str | None
    where: str | None
    when: str
    unless: str | None
    action: str
    otherwise: str
    if_unknown: str
    message: str
    message_otherwise: str | None
    message_unknown: str | None
    remediation: str | None


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    description: str
    context: Mapping[str, Any]
    rules: tuple[Rule, ...]
    source: str  # "shipped" or the file path
    digest: str  # of the policy text


_POLICY_KEYS = {"schema", "id", "name", "description", "context", "rules"}
_RULE_KEYS = {"id", "applies_to", "for_each", "where", "when", "unless", "action", "otherwise", "if_unknown",
              "message", "message_otherwise", "message_unknown", "remediation"}
_MODES = ("local_private", "internal_research", "hosted_inference", "outputs_only", "redistribute_weights")
FACTS = {  # deployer facts a policy may read from context, with their type
    "mode": str, "revenue_usd": float, "mau": float, "territories": list, "core_business": bool,
    "commercial_licenses_held": list, "registered_with": list,
}


def _policy(doc: Any, where: str, source: str, digest: str) -> Policy:
    pid = _head(doc, where, "lora-audit/policy/v1", _POLICY_KEYS)
    _need(isinstance(doc.get("name"), str) and doc["name"], where, "needs a name")
    context = doc.get("context") or {}
    _need(isinstance(context, dict), where, "context must be a mapping")
    _need(context.get("mode") in _MODES, where, f"context.mode must be one of {_MODES}")
    rules = []
    ids = set()
    for i, r in enumerate(doc.get("rules") or []):
        w = f"{where} rules[{i}]"
        _need(isinstance(r, dict), w, "must be a mapping")
        extra = set(r) - _RULE_KEYS
        _need(not extra, w, f"unknown field(s) {sorted(extra)}")
        rid = r.get("id")
        _need(isinstance(rid, str) and rid and rid not in ids, w, "needs a unique id")
        ids.add(rid)
        w = f"{where} rule {rid}"
        applies = r.get("applies_to", ["base", "intermediate"])
        applies = [applies] if isinstance(applies, str) else applies
        _need(isinstance(applies, list) and applies and set(applies) <= set(RULE_TARGETS), w,
              f"applies_to must be a list of {RULE_TARGETS}")
        fe = r.get("for_each")
        _need(fe is None or fe in LIST_FIELDS, w, f"for_each must be one of {LIST_FIELDS}")
        _need(fe is None or "adapter" not in applies, w, "for_each needs a license (not applies_to: adapter)")
        for key in ("action", "otherwise", "if_unknown"):
            default = {"action": None, "otherwise": "none", "if_unknown": "review"}[key]
            _need(r.get(key, default) in (*ACTIONS, "none") and (key != "action" or r.get(key) in ACTIONS), w,
                  f"{key} must be one of {ACTIONS}" + (" or none" if key != "action" else ""))
        for key in ("where", "when", "unless"):
            if r.get(key) is not None:
                try:
                    compile_expr(str(r[key]) if isinstance(r[key], bool) else r[key])
                except PolicyError as e:
                    raise PolicyError(f"{w} {key}: {e}") from None
        _need(isinstance(r.get("message"), str) and r["message"], w, "needs a message")
        for key in ("message", "message_otherwise", "message_unknown", "remediation"):
            _check_template(r.get(key), f"{w} {key}")
        when = r.get("when", "true")
        rules.append(Rule(
            id=rid, applies_to=tuple(applies), for_each=fe, where=r.get("where"),
            when="true" if when is True else "false" if when is False else when, unless=r.get("unless"),
            action=r["action"], otherwise=r.get("otherwise", "none"), if_unknown=r.get("if_unknown", "review"),
            message=r["message"], message_otherwise=r.get("message_otherwise"),
            message_unknown=r.get("message_unknown"), remediation=r.get("remediation"),
        ))
    _need(rules, where, "a policy needs at least one rule")
    return Policy(id=pid, name=doc["name"], description=str(doc.get("description") or "").strip(),
                  context=dict(context), rules=tuple(rules), source=source, digest=digest)


@functools.lru_cache(maxsize=1)
def shipped_policies() -> dict[str, Policy]:
    folder = rulefiles.package().joinpath("policies")
    out: dict[str, Policy] = {}
    for name, doc in rulefiles.read_docs(folder, "rules/policies"):
        text = folder.joinpath(name).read_text(encoding="utf-8")
        pol = _policy(doc, f"rules/policies/{name}", "shipped", hashlib.sha256(text.encode()).hexdigest()[:16])
        _need(name == f"{pol.id}.yaml", f"rules/policies/{name}", "id must equal the file name")
        out[pol.id] = pol
    return out


def load_policy(name_or_path: str) -> Policy:
    """A shipped policy by id, or a policy file the user wrote (YAML, validated, at most 1 MiB)."""
    shipped = shipped_policies()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if not (os.path.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))):
        raise PolicyError(f"unknown policy {name_or_path!r}; shipped: {', '.join(sorted(shipped))} "
                          "(or give the path of a policy file)")
    try:
        with open(name_or_path, "rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"{name_or_path}: cannot be read ({e.strerror or e})") from None
    _need(len(data) <= MAX_POLICY_BYTES, name_or_path, f"larger than {MAX_POLICY_BYTES} bytes")
    import yaml

    try:
        doc = yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PolicyError(f"{name_or_path}: not valid YAML: {e}") from None
    return _policy(doc, name_or_path, os.path.abspath(name_or_path), hashlib.sha256(data).hexdigest()[:16])


@dataclass(frozen=True)
class Settings:
    """What `license` and `scan` evaluate: policies, the deployer's facts and the bases the user asserts."""

    policies: tuple[Policy, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)  # override each policy's context
    assume: tuple[str, ...] = ()  # --assume-base ids (family or variant)


def settings_key(settings: Settings) -> str:
    """A stable digest of everything that changes licensing results (for the scan cache)."""
    doc = {"policies": [(p.id, p.digest) for p in settings.policies], "facts": dict(sorted(settings.facts.items())),
           "assume": list(settings.assume), "rules": rulefiles.rules_version()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def parse_fact(key: str, value: str) -> Any:
    """A deployer fact from the command line, typed by :data:`FACTS` (unknown keys stay strings)."""
    kind = FACTS.get(key, str)
    v = value.strip()
    if v.lower() in ("", "null", "unknown"):
        return None
    if kind is float:
        m = re.fullmatch(r"(?i)\$?\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kmb]?)", v)
        if not m:
            raise PolicyError(f"{key}: {value!r} is not a number (e.g. 2500000, 2.5M, 800k)")
        n = float(m.group(1).replace(",", "").replace("_", ""))
        return n * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
    if kind is bool:
        if v.lower() in ("yes", "true", "1"):
            return True
        if v.lower() in ("no", "false", "0"):
            return False
        raise PolicyError(f"{key}: {value!r} is not yes or no")
    if kind is list:
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


# ---------------------------------------------------------------------------------------------------------
# the license chain of one record


def _license_ref(know: Knowledge, lid: str) -> LicenseRef:
    return know.licenses[lid].ref()


def _lineage(know: Knowledge, bid: str, family: str, name: str) -> Lineage:
    entry = know.lineage.get(bid) or know.lineage.get(family)
    if entry is None:
        return Lineage(id=bid, family=family, name=name,
                       chain=[ChainLink("base", _license_ref(know, "unknown"), f"no entry for {bid} in rules/lineage.yaml")],
                       note="no license facts recorded for this base")
    via = f"lineage {entry.id} (rules/lineage.yaml: {entry.source})"
    return Lineage(id=bid, family=family, name=name, note=entry.note,
                   chain=[ChainLink(role, _license_ref(know, lid), via) for lid, role in entry.chain])


def _expand_candidate(cid: str, family: str, name: str, know: Knowledge) -> list[tuple[str, str, str]]:
    """A candidate that is a whole family with variants stands for every one of them (unless the lineage map
    has a family-level entry)."""
    bases = _bases()
    fam = bases.get(cid)
    if fam is not None and fam.variants and cid not in know.lineage:
        return [(v.id, fam.id, v.name) for v in fam.variants]
    return [(cid, family, name)]


def _choose_lineages(record: AuditRecord, settings: Settings, know: Knowledge
                     ) -> tuple[str, str, str | None, list[tuple[str, str, str]], list[Finding]]:
    """(basis, detail, asserted, [(id, family, name)], findings)."""
    fp = record.fingerprint
    findings: list[Finding] = []
    bases = _bases()
    ids = base_ids()
    known_fp = fp is not None and fp.family not in ("unknown", "not-diffusion")
    cands: list[tuple[str, str, str]] = []
    if known_fp:
        raw = [(c.id, c.family, c.name) for c in fp.candidates] or [(fp.family, fp.family, fp.name or fp.family)]
        for cid, fam, name in raw:
            for t in _expand_candidate(cid, fam, name, know):
                if t not in cands:
                    cands.append(t)

    def named(bid: str) -> tuple[str, str, str]:
        fam = ids[bid]
        if bid == fam:
            return bid, fam, bases[fam].name
        return bid, fam, next(v.name for v in bases[fam].variants if v.id == bid)

    # 1. what the user asserts
    applied: list[tuple[str, str, str]] = []
    for a in settings.assume:
        if a not in ids:
            continue
        if not known_fp:
            applied += [t for t in _expand_candidate(*named(a), know) if t not in applied]
            continue
        if any(c[0] == a for c in cands):
            applied.append(next(c for c in cands if c[0] == a))
        elif a == ids[a] and any(c[1] == a for c in cands):  # a family among the candidates: all its variants
            applied += [c for c in cands if c[1] == a and c not in applied]
        elif ids[a] in {c[1] for c in cands}:
            findings.append(make("LA410", f"--assume-base {a}: the tensors rule it out "
                                          f"(candidates: {', '.join(c[0] for c in cands)}); ignored"))
    if applied:
        findings.append(make("LA411", f"base asserted by the user: {', '.join(c[0] for c in applied)}"))
        detail = "asserted with --assume-base" + ("" if known_fp else "; the tensors alone do not identify the base")
        return "asserted", detail, ", ".join(c[0] for c in applied), applied, findings

    if not known_fp:
        what = "a language or vision model" if fp and fp.family == "not-diffusion" else "no known base family"
        return "unknown", f"the tensors show {what}; no inherited license can be derived", None, [], findings

    # 2. the adapter's own lineage claims, where the tensors allow them
    claims = [c for c in (record.claims.base_claims if record.claims else []) if c.family and c.verdict != "contradicts"]
    variants = {c.variant for c in claims if c.variant} & {c[0] for c in cands}
    chosen = [c for c in cands if c[0] in variants]
    if not chosen:
        fams = {c.family for c in claims} & {c[1] for c in cands}
        if fams and len(fams) < len({c[1] for c in cands}):
            chosen = [c for c in cands if c[1] in fams]
    if chosen and len(chosen) < len(cands):
        used = [c for c in claims if (c.variant in variants) or (not variants and c.family in {x[1] for x in chosen})]
        shown = "; ".join(f"{c.source} {c.key} = {c.value[:80]!r}" for c in used[:4])
        rest = ", ".join(c[0] for c in cands if c not in chosen)
        findings.append(make("LA409", f"lineage {', '.join(c[0] for c in chosen)} from the adapter's own claims "
                                      f"({shown}); shape-identical {rest} not evaluated"))
        return ("claimed", f"from the adapter's own claims ({shown}); the tensors cannot tell {rest} apart",
                None, chosen, findings)
    detail = "every candidate the tensors cannot rule out" if len(cands) > 1 else "identified from the tensors"
    return "candidates", detail, None, cands, findings


def _grant_rank(lic: License, key: str) -> int:
    return _GRANT_RANK.get(lic.data["grant"][key], 1)


def _more_permissive(a: License, b: License) -> list[str]:
    """The grant dimensions where ``a`` allows more than ``b``."""
    out = []
    for key in GRANT_KEYS:
        ra, rb = _grant_rank(a, key), _grant_rank(b, key)
        if ra > rb and rb != 1:  # nothing is "more" than an unknown grant
            out.append(key)
    return out


def _check_declared(declared: list[LicenseClaim], lineages: list[Lineage], know: Knowledge) -> list[Finding]:
    """Give each declared license its verdict against the inherited chain(s); findings for conflicts."""
    findings: list[Finding] = []
    inherited = [[know.licenses[l.license.id] for l in lin.chain if l.role in ("base", "intermediate")]
                 for lin in lineages]
    for c in declared:
        c.license = resolve_license(c.value, know) if c.license is None else c.license
        if c.license is None:
            c.verdict, c.reason = "unrecognised", "names no license in rules/licenses"
            findings.append(make("LA404", f"{c.source} {c.key} = {c.value[:80]!r} names no known license",
                                 where=f"{c.source}:{c.key}"))
            continue
        if not inherited or all(lic.id == "unknown" for chain in inherited for lic in chain):
            c.verdict, c.reason = "unverifiable", "the inherited license is unknown"
            continue
        d = know.licenses[c.license]
        per_lineage = []
        for lin, chain in zip(lineages, inherited):
            problems, stricter = [], False
            for inh in chain:
                if inh.id == "unknown" or inh.family == d.family:
                    continue
                wider = _more_permissive(d, inh)
                narrower = _more_permissive(inh, d)
                mode = inh.data["derivatives"]["inheritance"]
                if wider:
                    problems.append(f"{d.name} allows {', '.join(w.replace('_', ' ') for w in wider)}, which "
                                    f"{inh.name} does not")
                elif mode == "same_license":
                    problems.append(f"{inh.name} requires derivatives to stay under its own terms")
                elif mode == "copyleft" and narrower:
                    problems.append(f"{inh.name} requires derivatives under it or a license allowing at least as much")
                elif narrower:
                    stricter = True
            per_lineage.append((lin.id, problems, stricter))
        conflicting = [p for p in per_lineage if p[1]]
        if conflicting and len(conflicting) == len(per_lineage):
            c.verdict = "conflicts"
            c.reason = "; ".join(dict.fromkeys(p for _, probs, _ in conflicting for p in probs))
            findings.append(make("LA403", f"{c.source} {c.key} declares {d.name}, but the adapter inherits from "
                                          f"{', '.join(l.id for l in lineages)}: {c.reason}",
                                 where=f"{c.source}:{c.key}"))
        elif conflicting:
            ok = [p[0] for p in per_lineage if not p[1]]
            c.verdict = "unverifiable"
            c.reason = (f"consistent only if the base is {', '.join(ok)}; conflicts with "
                        f"{', '.join(p[0] for p in conflicting)}")
        elif any(p[2] for p in per_lineage):
            c.verdict, c.reason = "more-restrictive", "the adapter's author adds terms to the inherited license"
        else:
            c.verdict, c.reason = "consistent", None
    families = {know.licenses[c.license].family for c in declared if c.license}
    if len(families) > 1:
        shown = "; ".join(f"{c.source} {c.key} -> {c.license}" for c in declared if c.license)
        findings.append(make("LA406", f"the adapter's license claims name {len(families)} licenses: {shown}"))
    return findings


def _civitai_findings(perms: Mapping[str, Any] | None, lineages: list[Lineage], know: Knowledge) -> list[Finding]:
    if not perms:
        return []
    out = []
    for lin in lineages:
        for link in lin.chain:
            if link.role not in ("base", "intermediate"):
                continue
            g = know.licenses[link.license.id].data["grant"]
            if g["model_commercial"] == "no" and (perms.get("sell_model") or perms.get("paid_generation")):
                out.append(f"allowCommercialUse = {_show(perms.get('allowCommercialUse'))} lets others sell or "
                           f"rent the model, which {link.license.name} forbids (lineage {lin.id})")
            if g["output_commercial"] == "no" and perms.get("sell_images"):
                out.append(f"allowCommercialUse includes Image (selling generated images), which "
                           f"{link.license.name} forbids (lineage {lin.id})")
    out = list(dict.fromkeys(out))
    if out and len({lin.id for lin in lineages}) > 1 and len(out) < len(lineages):
        return []  # conflicts with only some candidate bases: the ambiguity finding already asks for review
    return [make("LA405", "; ".join(out[:3]), where="sidecar:allowCommercialUse")] if out else []


def _lora_env(record: AuditRecord, declared: list[LicenseClaim], lineages: list[Lineage]) -> dict[str, Any]:
    fp = record.fingerprint
    return {
        "declared": [c.license for c in declared if c.license],
        "conflicting": [c.license for c in declared if c.verdict == "conflicts"],
        "civitai": dict(record.claims.permissions) if record.claims and record.claims.permissions else None,
        "family": fp.family if fp else "unknown",
        "confidence": fp.confidence if fp else "none",
        "lineages": [lin.id for lin in lineages],
    }


def _author_links(declared: list[LicenseClaim], know: Knowledge) -> list[ChainLink]:
    """The adapter author's own licenses that bind on top of the inherited chain: those that are consistent
    or stricter. A declared license that grants more than the base is ignored (an adapter cannot relicense its
    base)."""
    out = []
    for c in declared:
        if c.license and c.verdict in ("consistent", "more-restrictive", "unverifiable") and c.license != "unknown":
            link = ChainLink("lora_author", _license_ref(know, c.license), f"{c.source} {c.key}")
            if all(x.license.id != link.license.id for x in out):
                out.append(link)
    return out


def _context(policy: Policy, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The deployer facts a policy is evaluated with: every known fact (null: unknown), the policy's
    defaults, then the user's facts; the license-family lists default to empty."""
    context = {**{k: None for k in FACTS}, **policy.context, **facts}
    for key in ("commercial_licenses_held", "registered_with"):
        if context.get(key) is None:
            context[key] = []
    return context


def _evaluate(policy: Policy, lineage: Lineage, author: list[ChainLink], lora: dict[str, Any],
              context: Mapping[str, Any], know: Knowledge) -> tuple[str, list[Reason]]:
    links = list(lineage.chain) + author
    reasons: list[Reason] = []
    lin_env = {"id": lineage.id, "family": lineage.family, "name": lineage.name}
    for rule in policy.rules:
        for target in rule.applies_to:
            bound = [None] if target == "adapter" else [link for link in links if link.role == target]
            for link in bound:
                lic = know.licenses[link.license.id] if link else None
                items = [None] if not rule.for_each else list((lic.data.get(rule.for_each) or []) if lic else [])
                for item in items:
                    roots = {"license": lic.data if lic else None, "item": item, "context": context,
                             "lora": lora, "lineage": lin_env}
                    env = _Env(roots, know.regions)
                    if rule.where and _truth(evaluate(compile_expr(rule.where), env)) is not True:
                        continue
                    if rule.unless and _truth(evaluate(compile_expr(rule.unless), env)) is True:
                        continue
                    outcome = _truth(evaluate(compile_expr(rule.when), env))
                    if outcome is True:
                        action, text = rule.action, rule.message
                    elif outcome is False:
                        action, text = rule.otherwise, rule.message_otherwise or rule.message
                    else:
                        action, text = rule.if_unknown, rule.message_unknown or rule.message
                    if action == "none":
                        continue
                    clause = (item or {}).get("clause") if item else None
                    reasons.append(Reason(
                        rule=rule.id, action=action, message=render_template(text, roots) or "",
                        remediation=render_template(rule.remediation, roots) if action in ("deny", "review") else None,
                        license=lic.id if lic else None, clause=clause, url=lic.url if lic else None,
                        lineage=lineage.id,
                    ))
    worst = max((VERDICTS.index(_ACTION_VERDICT[r.action]) for r in reasons), default=0)
    return VERDICTS[worst], reasons


def _merge(reasons: Iterable[Reason]) -> list[Reason]:
    """One reason per (rule, action, message, license), naming every lineage it holds for."""
    merged: dict[tuple, Reason] = {}
    for r in reasons:
        key = (r.rule, r.action, r.message, r.license)
        if key in merged:
            prev = merged[key]
            ids = (prev.lineage or "").split(", ")
            if r.lineage and r.lineage not in ids:
                prev.lineage = ", ".join([*ids, r.lineage])
        else:
            merged[key] = Reason(**{**r.__dict__})
    return list(merged.values())


def apply(record: AuditRecord, settings: Settings) -> None:
    """Fill ``record.licensing`` and ``record.policies`` and the LA40x findings (replacing earlier ones)."""
    record.findings = [f for f in record.findings if not f.code.startswith("LA4")]
    if record.status == "error":
        record.licensing, record.policies = None, []
        return
    know = knowledge()
    basis, detail, asserted, chosen, findings = _choose_lineages(record, settings, know)
    lineages = [_lineage(know, bid, fam, name) for bid, fam, name in chosen]
    if not lineages:
        lineages = [Lineage(id="unknown", family=record.fingerprint.family if record.fingerprint else "unknown",
                            name="unknown base", chain=[ChainLink("base", _license_ref(know, "unknown"), detail)])]
    declared = [LicenseClaim(**{**c.__dict__}) for c in (record.claims.licenses if record.claims else [])]
    findings += _check_declared(declared, lineages, know)
    perms = record.claims.permissions if record.claims else None
    findings += _civitai_findings(perms, lineages, know)
    chains = {tuple(l.license.id for l in lin.chain) for lin in lineages}
    if len(chains) > 1:
        findings.append(make("LA408", f"{len(lineages)} candidate bases with {len(chains)} different license "
                                      f"chains ({', '.join(lin.id for lin in lineages)}); every one is evaluated "
                                      "and the strictest verdict applies; confirm the base with --assume-base"))
    weak = sorted({l.license.id for lin in lineages for l in lin.chain
                   if l.role in ("base", "intermediate") and l.license.level in ("S", "U")})
    if weak:
        findings.append(make("LA407", f"inherited license facts not primary-verified: {', '.join(weak)}"))
    record.licensing = Licensing(basis=basis, basis_detail=detail, asserted=asserted, lineages=lineages,
                                 declared=declared, civitai=dict(perms) if perms else None, disclaimer=DISCLAIMER)
    author = _author_links(declared, know)
    lora = _lora_env(record, declared, lineages)
    record.policies = []
    for policy in settings.policies:
        context = _context(policy, settings.facts)
        by_lineage: dict[str, str] = {}
        all_reasons: list[Reason] = []
        for lin in lineages:
            verdict, reasons = _evaluate(policy, lin, author, lora, context, know)
            by_lineage[lin.id] = verdict
            all_reasons += reasons
        verdict = max(by_lineage.values(), key=VERDICTS.index)
        merged = _merge(all_reasons)
        if len(set(by_lineage.values())) > 1:
            strict = [k for k, v in by_lineage.items() if v == verdict]
            merged.append(Reason(
                rule="ambiguous-base", action="note", lineage=", ".join(by_lineage),
                message=(f"The tensors cannot tell {', '.join(by_lineage)} apart; the verdict is the strictest "
                         f"({verdict}, from {', '.join(strict)}). If you know the base, assert it with "
                         "--assume-base."),
            ))
        pv = PolicyVerdict(
            policy=policy.id, name=policy.name, verdict=verdict,
            reasons=[r for r in merged if r.action in ("deny", "review")],
            conditions=[r for r in merged if r.action == "condition"],
            notes=[r for r in merged if r.action == "note"],
            by_lineage=by_lineage, context={k: v for k, v in sorted(context.items())},
        )
        record.policies.append(pv)
        code = _VERDICT_FINDING.get(verdict)
        if code:
            first = (pv.reasons or pv.conditions or [None])[0]
            more = len(pv.reasons or pv.conditions) - 1
            tail = f": {first.message}" + (f" (+{more} more)" if more > 0 else "") if first else ""
            findings.append(make(code, f"policy {policy.id}: {verdict}{tail}", where=f"policy:{policy.id}"))
    record.findings.extend(findings)
