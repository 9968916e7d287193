"""Base-model fingerprint: which base family an adapter was trained for, from its tensors, with evidence.

Knowledge lives in ``rules/bases/<family>.yaml`` (schema: rules/bases/SCHEMA.md); this module is the engine
that loads, validates and scores it. It works on layer names and widths only (no tensor values), so it costs a
few milliseconds whatever the file size.

Scoring, in short: a family is considered when one of its anchor signals matches; its score is the weight of
its matched signals minus the weight of its contradicted ones; uncontradicted families rank above contradicted
ones. Families that score within ``TIE_RATIO`` of the winner and are not contradicted cannot be told apart by
the modules in this file: they are listed as candidates, and the winner among them is the one a base-model
claim names, else the one with the highest ``prior``. Variants of the winning family (what shapes cannot
separate, e.g. FLUX.1 dev / schnell) are always reported as candidates, never chosen silently.

Confidence (documented in the README):
  ``high``    the winner matched at least one decisive signal (a width or an exact block count), nothing
              contradicts it, and no other family fits the modules present as well;
  ``medium``  nothing contradicts the winner, but either another family fits as well (listed as a candidate)
              or only module names matched (no decisive width or block count);
  ``low``     the winner has contradicting evidence, or its evidence is thin (score below ``THIN_SCORE``:
              e.g. only a text encoder was trained);
  ``none``    no family's anchor matched: the family is ``unknown`` (or ``not-diffusion`` by the format's
              domain check).

Claims (metadata, model card, sidecar) are checked against the result: a claim naming a family the tensors
rule out gives LA300 (high confidence) or LA301 (lower confidence); claims naming different families give
LA302; a claim naming no known family gives LA310.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from audit import rulefiles
from audit.findings import Finding, make
from audit.record import Candidate, Claim, Evidence, Fingerprint, LayerRecord

TIE_RATIO = 0.8
THIN_SCORE = 3.0
DECISIVE_KINDS = ("width", "blocks")
DEFAULT_COMPONENTS = frozenset({"unet", "transformer", "prior_unet", "unknown"})
ALL_COMPONENTS = frozenset(
    {"unet", "transformer", "te", "te1", "te2", "te3", "prior_unet", "prior_te", "embedding", "vision", "unknown"}
)
SIGNAL_KINDS = ("module", "width", "blocks", "forbid")
SPECIAL_CLAIM_KEYS = frozenset({"ss_v2", "ss_sd_model_name"})
_ID_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}")
_MAX_CLAIM_CHARS = 512
_ADAPTER_SUFFIXES = frozenset({"lora", "lycoris", "textual-inversion", "lokr", "loha", "dora", "locon", "oft",
                               "boft", "ia3", "glora", "hypernetwork", "controlnet", "ti"})


# ------------------------------------------------------------------------------------------------------
# rules


class Pattern:
    """A rules-file regular expression, compiled on first use.

    Compiling the ~500 patterns of every family costs more than fingerprinting itself, and most belong to
    families whose anchors never match; so a normal run compiles the anchors when the rules are read and the
    rest when a family is scored. ``load_rules(folder)`` and ``load_rules(strict=True)`` compile everything
    at once, so a rules file is validated whole (the shipped rules are, by the tests).
    """

    __slots__ = ("pattern", "flags", "where", "groups_needed", "_rx")

    def __init__(self, pattern: Any, where: str, flags: int = 0, groups_needed: int = 0) -> None:
        _need(isinstance(pattern, str) and 0 < len(pattern) <= 2000, where, "pattern must be a non-empty string")
        self.pattern, self.flags, self.where, self.groups_needed = pattern, flags, where, groups_needed
        self._rx: re.Pattern | None = None

    @property
    def rx(self) -> re.Pattern:
        rx = self._rx
        if rx is None:
            try:
                rx = re.compile(self.pattern, self.flags)
            except re.error as e:
                raise _Bad(f"{self.where}: bad regular expression {self.pattern!r}: {e}") from None
            _need(rx.groups >= self.groups_needed, self.where,
                  "blocks patterns need a capturing group for the block index")
            self._rx = rx
        return rx


@dataclass(frozen=True)
class Signal:
    id: str
    kind: str
    what: str
    regex: Pattern
    components: frozenset[str]
    weight: float
    anchor: bool = False
    dim: str | None = None  # width: "in" | "out"
    one_of: frozenset[int] = frozenset()
    require: str = "all"  # width: all | any
    count: frozenset[int] = frozenset()  # blocks: the model sizes' block counts
    source: str | None = None


@dataclass(frozen=True)
class Variant:
    id: str
    name: str
    note: str
    signals: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class ClaimRule:
    regex: Pattern
    variant: str | None
    also: frozenset[str]  # other families the same words are consistent with (e.g. "SD 3.5": large or medium)
    keys: frozenset[str] | None
    search: bool
    source: str | None


@dataclass(frozen=True)
class Family:
    id: str
    name: str
    prior: float
    signals: tuple[Signal, ...]
    variants: tuple[Variant, ...]
    claims: tuple[ClaimRule, ...]
    anchors: tuple[Signal, ...] = field(default=())


class _Bad(ValueError):
    pass


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise _Bad(f"{where}: {what}")


def _source(entry: Mapping, sources: Mapping[str, str], where: str) -> str:
    key = entry.get("source")
    _need(isinstance(key, str) and key in sources, where, f"source {key!r} is not a key of 'sources'")
    return f"{key}: {sources[key]}"


def _signal(entry: Any, sources: Mapping[str, str], where: str) -> Signal:
    _need(isinstance(entry, dict), where, "a signal must be a mapping")
    sid = entry.get("id")
    _need(isinstance(sid, str) and bool(sid), where, "signal needs an id")
    where = f"{where} signal {sid}"
    kind = entry.get("kind")
    _need(kind in SIGNAL_KINDS, where, f"kind must be one of {SIGNAL_KINDS}")
    what = entry.get("what")
    _need(isinstance(what, str) and bool(what), where, "needs 'what'")
    weight = entry.get("weight", 1)
    _need(isinstance(weight, (int, float)) and 0 < weight <= 100, where, "weight must be in (0, 100]")
    comps = entry.get("components")
    if comps is None:
        components = DEFAULT_COMPONENTS
    else:
        _need(isinstance(comps, list) and comps and all(c in ALL_COMPONENTS for c in comps), where,
              f"components must be a list drawn from {sorted(ALL_COMPONENTS)}")
        components = frozenset(comps)
    known = {"id", "kind", "what", "match", "components", "weight", "anchor", "dim", "one_of", "require",
             "count", "source"}
    extra = set(entry) - known
    _need(not extra, where, f"unknown field(s) {sorted(extra)}")
    regex = Pattern(entry.get("match"), where, groups_needed=1 if kind == "blocks" else 0)
    sig = dict(id=sid, kind=kind, what=what, regex=regex, components=components, weight=float(weight),
               anchor=bool(entry.get("anchor", False)), source=_source(entry, sources, where))
    if kind == "width":
        _need(entry.get("dim") in ("in", "out"), where, "width signals need dim: in | out")
        one_of = entry.get("one_of")
        _need(isinstance(one_of, list) and one_of and all(isinstance(v, int) and v > 0 for v in one_of), where,
              "width signals need one_of: a list of positive integers")
        _need(entry.get("require", "all") in ("all", "any"), where, "require must be all | any")
        sig.update(dim=entry["dim"], one_of=frozenset(one_of), require=entry.get("require", "all"))
    elif kind == "blocks":
        count = entry.get("count")
        counts = count if isinstance(count, list) else [count]
        _need(bool(counts) and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts),
              where, "blocks signals need count: a positive integer or a list of them (one per model size)")
        sig.update(count=frozenset(counts))
    return Signal(**sig)


def _family(data: Any, name: str) -> Family:
    where = f"rules/bases/{name}"
    _need(isinstance(data, dict), where, "top level must be a mapping")
    _need(data.get("schema") == 1, where, "schema: 1 expected")
    fid = data.get("family")
    _need(isinstance(fid, str) and bool(_ID_RE.fullmatch(fid)), where, "family must be a lower-case id")
    _need(name == f"{fid}.yaml", where, f"file name must be {fid}.yaml")
    _need(isinstance(data.get("name"), str) and data["name"], where, "needs a display name")
    prior = data.get("prior", 0)
    _need(isinstance(prior, (int, float)), where, "prior must be a number")
    sources = data.get("sources")
    _need(isinstance(sources, dict) and sources and all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in sources.items()), where,
          "sources must map keys to citations")
    raw_signals = data.get("signals")
    _need(isinstance(raw_signals, list) and raw_signals, where, "needs a non-empty signals list")
    signals = tuple(_signal(e, sources, where) for e in raw_signals)
    ids = [s.id for s in signals]
    _need(len(ids) == len(set(ids)), where, "signal ids must be unique")
    anchors = tuple(s for s in signals if s.anchor)
    _need(bool(anchors), where, "at least one signal must be an anchor")
    _need(all(s.kind != "forbid" for s in anchors), where, "a forbid signal cannot be an anchor")
    variants = []
    for v in data.get("variants") or []:
        _need(isinstance(v, dict) and isinstance(v.get("id"), str) and isinstance(v.get("name"), str), where,
              "each variant needs an id and a name")
        vw = f"{where} variant {v['id']}"
        vs = tuple(_signal(e, sources, vw) for e in (v.get("signals") or []))
        variants.append(Variant(id=v["id"], name=v["name"], note=str(v.get("note") or ""), signals=vs))
    vids = [v.id for v in variants]
    _need(len(vids) == len(set(vids)), where, "variant ids must be unique")
    claims = []
    for c in data.get("claims") or []:
        _need(isinstance(c, dict), where, "each claim rule must be a mapping")
        variant = c.get("variant")
        _need(variant is None or variant in vids, where, f"claim names unknown variant {variant!r}")
        keys = c.get("keys")
        _need(keys is None or (isinstance(keys, list) and all(isinstance(k, str) for k in keys)), where,
              "claim keys must be a list of metadata keys")
        also = c.get("also") or []
        _need(isinstance(also, list) and all(isinstance(a, str) and _ID_RE.fullmatch(a) for a in also), where,
              "claim 'also' must be a list of family ids")
        claims.append(ClaimRule(regex=Pattern(c.get("match"), f"{where} claim", re.IGNORECASE), variant=variant,
                                also=frozenset(also),
                                keys=frozenset(keys) if keys else None, search=bool(c.get("search", False)),
                                source=_source(c, sources, f"{where} claim") if "source" in c else None))
    return Family(id=fid, name=data["name"], prior=float(prior), signals=signals, variants=tuple(variants),
                  claims=tuple(claims), anchors=anchors)


def load_rules(folder=None, *, strict: bool = False) -> dict[str, Family]:
    """Every ``*.yaml`` in rules/bases (or ``folder``), validated. Raises ValueError naming file and problem.

    The shipped rules are read once per process, with only the anchor patterns compiled (see :class:`Pattern`);
    ``strict`` (and any explicit ``folder``) compiles every pattern now, validating the files whole.
    """
    if folder is not None:
        return _load(folder, strict=True)
    rules = _load_default()
    if strict:
        _compile_all(rules)
    return rules


@functools.lru_cache(maxsize=1)
def _load_default() -> dict[str, Family]:
    return _load(resources.files("audit.rules").joinpath("bases"), strict=False)


def _compile_all(rules: Mapping[str, Family]) -> None:
    try:
        for fam in rules.values():
            for sig in fam.signals + tuple(s for v in fam.variants for s in v.signals):
                _ = sig.regex.rx
            for rule in fam.claims:
                _ = rule.regex.rx
    except _Bad as e:
        raise ValueError(str(e)) from None


def _load(folder, *, strict: bool) -> dict[str, Family]:
    """Read and validate every rules file. Documents come from the JSON cache when it holds these exact texts;
    whatever their origin, each is validated by ``_family``: the cache saves parsing, never checking."""
    docs = rulefiles.read_docs(folder, "rules/bases", cache=not strict)
    out: dict[str, Family] = {}
    for name, data in docs:
        fam = _family(data, name)
        out[fam.id] = fam
    if not out:
        raise ValueError("rules/bases: no family rules found")
    if strict:
        _compile_all(out)
    else:
        _compile_all({k: dataclasses.replace(f, signals=f.anchors, variants=(), claims=()) for k, f in out.items()})
    return out


# ------------------------------------------------------------------------------------------------------
# layers


@dataclass(frozen=True)
class FPLayer:
    """What the fingerprint needs of one layer."""

    key: str
    component: str
    module: str  # normalised: '.' -> '_'
    in_: int | None
    out: int | None


def _norm_module(module: str) -> str:
    return module.replace(".", "_")


def _fp_layer(key: str, component: str, module: str, in_features: int | None, out_features: int | None) -> FPLayer:
    """A textual-inversion embedding's width is its vector width, both ways (its "out" is the vector count)."""
    if component == "embedding":
        out_features = in_features
    return FPLayer(key, component, _norm_module(module), in_features, out_features)


def layers_from_records(records: Iterable[LayerRecord]) -> list[FPLayer]:
    return [_fp_layer(r.key, r.component, r.module, r.in_features, r.out_features) for r in records]


# ------------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class _Scored:
    family: Family
    evidence: list[Evidence]
    score: float
    contradicted: bool
    decisive: bool
    lower_bound: bool


class _Index:
    """Layers grouped by component, with the regex results cached per (pattern, component set)."""

    def __init__(self, layers: Sequence[FPLayer]):
        self.by_comp: dict[str, list[FPLayer]] = {}
        for layer in sorted(layers, key=lambda l: l.key):
            self.by_comp.setdefault(layer.component, []).append(layer)
        self._cache: dict[tuple[str, frozenset[str]], list[tuple[FPLayer, re.Match]]] = {}

    def hits(self, sig: Signal) -> list[tuple[FPLayer, re.Match]]:
        k = (sig.regex.pattern, sig.components)  # flags are always 0 for signals
        got = self._cache.get(k)
        if got is None:
            search = sig.regex.rx.search
            got = []
            for comp in sig.components:
                for layer in self.by_comp.get(comp, ()):
                    m = search(layer.module)
                    if m:
                        got.append((layer, m))
            got.sort(key=lambda lm: lm[0].key)
            self._cache[k] = got
        return got


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(values))


def _evaluate(sig: Signal, family: str, index: _Index) -> Evidence | None:
    hits = index.hits(sig)
    if not hits:
        return None

    def ev(outcome: str, observed: str | None, expected: str | None, where: str) -> Evidence:
        return Evidence(family=family, signal=sig.id, kind=sig.kind, outcome=outcome, what=sig.what,
                        observed=observed, expected=expected, where=where, source=sig.source)

    if sig.kind == "module":
        return ev("match", f"{len(hits)} layer(s)", None, hits[0][0].key)
    if sig.kind == "forbid":
        return ev("contradict", f"{len(hits)} layer(s)", "absent", hits[0][0].key)
    if sig.kind == "width":
        pairs = [(layer, layer.in_ if sig.dim == "in" else layer.out) for layer, _ in hits]
        pairs = [(layer, w) for layer, w in pairs if w is not None]
        if not pairs:
            return None
        good = [(layer, w) for layer, w in pairs if w in sig.one_of]
        expected = _ints(sig.one_of)
        if sig.require == "any":
            if not good:
                return None
            return ev("match", str(good[0][1]), expected, good[0][0].key)
        bad = [(layer, w) for layer, w in pairs if w not in sig.one_of]
        if bad:
            return ev("contradict", _ints({w for _, w in bad}), expected, bad[0][0].key)
        return ev("match", _ints({w for _, w in good}), expected, good[0][0].key)
    # blocks
    best = None
    for layer, m in hits:
        try:
            idx = int(m.group(1))
        except (TypeError, ValueError, IndexError):
            continue
        if best is None or idx > best[0]:
            best = (idx, layer)
    if best is None:
        return None
    n = best[0] + 1
    outcome = "contradict" if n > max(sig.count) else "match" if n in sig.count else "lower-bound"
    return ev(outcome, f"{n} (highest index {best[0]})", " or ".join(map(str, sorted(sig.count))), best[1].key)


def _score_family(fam: Family, index: _Index) -> _Scored | None:
    if not any(index.hits(a) for a in fam.anchors):  # cheap pre-check: most families stop here
        return None
    results = [(sig, _evaluate(sig, fam.id, index)) for sig in fam.signals]
    if not any(sig.anchor and e is not None and e.outcome == "match" for sig, e in results):
        return None
    evidence, score, contradicted, decisive, lower = [], 0.0, False, False, False
    for sig, e in results:
        if e is None:
            continue
        evidence.append(e)
        if e.outcome == "match":
            score += sig.weight
            decisive = decisive or sig.kind in DECISIVE_KINDS
        elif e.outcome == "contradict":
            score -= sig.weight
            contradicted = True
        else:
            lower = True
    return _Scored(fam, evidence, score, contradicted, decisive, lower)


# ------------------------------------------------------------------------------------------------------
# claims


def normalise_claim(value: str) -> str:
    """Trim, NFKC, lower-case, drop an adapter suffix after the last '/', fold runs of spaces/underscores."""
    text = unicodedata.normalize("NFKC", value[:_MAX_CLAIM_CHARS]).strip().lower()
    head, sep, tail = text.rpartition("/")
    if sep and tail.strip() in _ADAPTER_SUFFIXES:
        text = head.strip()
    return re.sub(r"[\s_]+", "_", text)


def resolve_claim(key: str, value: str, rules: Mapping[str, Family] | None = None) -> tuple[str, str | None] | None:
    """The (family, variant) a claim names per the rules, or None when it names none."""
    hit = _resolve(key, value, rules if rules is not None else load_rules())
    return (hit[0], hit[1]) if hit else None


def _resolve(key: str, value: str, rules: Mapping[str, Family]) -> tuple[str, str | None, frozenset[str]] | None:
    text = normalise_claim(value)
    if not text:
        return None
    for fam in rules.values():
        for rule in fam.claims:
            if rule.keys is None:
                if key in SPECIAL_CLAIM_KEYS:
                    continue
            elif key not in rule.keys:
                continue
            hit = rule.regex.rx.search(text) if rule.search else rule.regex.rx.fullmatch(text)
            if hit:
                return fam.id, rule.variant, rule.also
    return None


def _short(value: str, limit: int = 80) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------------
# identify


def identify(
    layers: Sequence[FPLayer],
    *,
    claims: Sequence[Claim] = (),
    domain: str | None = None,
    domain_reason: str | None = None,
    rules: Mapping[str, Family] | None = None,
) -> tuple[Fingerprint, list[Finding]]:
    """Fingerprint the base family from layers; fill each claim's family, variant and verdict in place."""
    rules = rules if rules is not None else load_rules()
    also: dict[int, frozenset[str]] = {}  # claim -> other families its words are consistent with
    for c in claims:
        hit = _resolve(c.key, c.value, rules)
        c.family, c.variant = (hit[0], hit[1]) if hit else (None, None)
        c.verdict = "unverifiable" if hit else "unrecognised"
        also[id(c)] = hit[2] if hit else frozenset()

    if domain == "not-diffusion":
        fp = Fingerprint(family="not-diffusion", confidence="high", reason=domain_reason)
        return fp, _claim_findings(fp, claims, set(), rules, also)

    index = _Index(layers)
    scored = [s for s in (_score_family(f, index) for f in rules.values()) if s is not None]
    if not scored:
        fp = Fingerprint(family="unknown", confidence="none",
                         reason=domain_reason if domain == "not-a-lora" else
                         "no base family's key pattern matches the adapter's modules")
        findings = [make("LA303", "no base family's key pattern matches the adapter's modules")] if layers else []
        return fp, findings + _claim_findings(fp, claims, set(), rules, also)

    scored.sort(key=lambda s: (not s.contradicted, s.score, s.family.prior, s.family.id), reverse=True)
    best = scored[0]
    tied = [s for s in scored[1:] if not s.contradicted and not best.contradicted
            and s.score >= TIE_RATIO * best.score]
    pool = [best] + tied
    claimed = {c.family for c in claims if c.family}
    chosen_by_claim = None
    if len(pool) > 1:
        named = [s for s in pool if s.family.id in claimed]
        if len(named) == 1:
            winner, chosen_by_claim = named[0], named[0].family.id
        else:
            winner = max(pool, key=lambda s: (s.score, s.family.prior, s.family.id))
    else:
        winner = best
    rivals = [s for s in pool if s is not winner]

    if winner.contradicted:
        confidence, reason = "low", "every family whose key pattern matches is contradicted by some signal"
    elif winner.score < THIN_SCORE:
        confidence, reason = "low", "thin evidence: few signals matched (e.g. only a text encoder was trained)"
    elif rivals:
        names = ", ".join(s.family.id for s in rivals)
        how = (f"chosen by a metadata claim ({chosen_by_claim})" if chosen_by_claim
               else "chosen by rule prior")
        confidence, reason = "medium", f"shape-identical for the modules present: {names}; {how}"
    elif not winner.decisive:
        confidence, reason = "medium", "module names match, but no decisive width or block count was present"
    else:
        confidence, reason = "high", "decisive widths or block counts match and nothing contradicts them"
    if winner.lower_bound:
        reason += "; the adapter touches only some blocks, so block counts are lower bounds"

    evidence = list(winner.evidence) + [e for s in scored if s is not winner for e in s.evidence]
    fp = Fingerprint(
        family=winner.family.id,
        name=winner.family.name,
        confidence=confidence,
        reason=reason,
        partial=winner.lower_bound,
        candidates=_candidates(winner, rivals, index, claims),
        evidence=evidence,
        scores={s.family.id: s.score for s in scored},
    )
    findings: list[Finding] = []
    if len(fp.candidates) > 1:
        ids = ", ".join(c.id for c in fp.candidates[:8]) + (" …" if len(fp.candidates) > 8 else "")
        findings.append(make("LA304", f"{len(fp.candidates)} candidates the shapes cannot separate: {ids}"))
    if confidence == "low":
        findings.append(make("LA303", f"base family {fp.family} is only a weak guess: {reason}"))
    return fp, findings + _claim_findings(fp, claims, {s.family.id for s in pool}, rules, also)


def _candidates(winner: _Scored, rivals: list[_Scored], index: _Index, claims: Sequence[Claim]) -> list[Candidate]:
    fam = winner.family
    out: list[tuple[int, int, Candidate]] = []
    kept, dropped = [], []
    for order, v in enumerate(fam.variants):
        supports = [v.note] if v.note else []
        against = []
        for sig in v.signals:
            e = _evaluate(sig, fam.id, index)
            if e is None:
                continue
            text = f"{sig.what} (observed {e.observed})"
            if e.outcome == "match":
                supports.append(text)
            elif e.outcome == "contradict":
                against.append(text)  # a lower bound says nothing about a variant
        named = [c for c in claims if c.family == fam.id and c.variant == v.id]
        supports += [f"claim {c.key} = {_short(c.value)}" for c in named]
        cand = Candidate(id=v.id, family=fam.id, name=v.name, supports=supports, against=against)
        (dropped if against and not named else kept).append((order, cand, bool(named)))
    chosen = kept or dropped  # all variants contradicted: keep them all, with what is against each
    for order, cand, named in chosen:
        out.append((0 if named else 1, order, cand))
    for i, s in enumerate(rivals):
        named = any(c.family == s.family.id for c in claims)
        out.append((0 if named else 2, 1000 + i, Candidate(
            id=s.family.id, family=s.family.id, name=s.family.name,
            supports=[f"shape-identical for the modules in this file (score {s.score:g} vs {winner.score:g})"],
        )))
    out.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in out]


def _claim_findings(fp: Fingerprint, claims: Sequence[Claim], pool: set[str], rules,
                    also: Mapping[int, frozenset[str]]) -> list[Finding]:
    findings: list[Finding] = []
    recognised = [c for c in claims if c.family]
    for c in claims:
        if not c.family:
            findings.append(make("LA310", f"{c.source} {c.key} = {_short(c.value)!r} names no known base family",
                                 where=f"{c.source}:{c.key}"))
            continue
        if fp.family == "unknown":
            c.verdict = "unverifiable"
            continue
        if fp.family == "not-diffusion":
            c.verdict = "contradicts"
            findings.append(make("LA301", f"{c.source} {c.key} = {_short(c.value)!r} names diffusion family "
                                          f"{c.family}, but the tensors belong to a language or vision model",
                                 where=f"{c.source}:{c.key}"))
            continue
        if fp.family in also.get(id(c), ()) or (pool & also.get(id(c), frozenset())):
            c.verdict = "agrees"  # the words name a group of families (e.g. "SD 3.5"), this one among them
            continue
        if c.family in pool or c.family == fp.family:
            variant_ids = {v.id for v in rules[c.family].variants} if c.family in rules else set()
            kept = {k.id: k for k in fp.candidates}
            if c.variant and c.family == fp.family and c.variant in variant_ids and \
                    (c.variant not in kept or kept[c.variant].against):
                c.verdict = "contradicts"
                findings.append(make("LA301", f"{c.source} {c.key} = {_short(c.value)!r} names variant "
                                              f"{c.variant}, which the tensors rule out", where=f"{c.source}:{c.key}"))
            else:
                c.verdict = "agrees"
            continue
        c.verdict = "contradicts"
        strong = fp.confidence == "high"
        findings.append(make(
            "LA300" if strong else "LA301",
            f"claim contradicts tensors: {c.source} {c.key} = {_short(c.value)!r} names {c.family}, but the "
            f"tensors show {fp.family} ({fp.confidence} confidence)",
            where=f"{c.source}:{c.key}",
        ))
    # claims disagree when they name different families, unless the tensors cannot tell those apart either
    def group(c: Claim) -> str:
        near = also.get(id(c), frozenset())
        return "pool" if c.family in pool or fp.family in near or pool & near else c.family

    families = sorted({group(c) for c in recognised})
    if len(families) > 1:
        detail = "; ".join(f"{c.source} {c.key} -> {c.family}" for c in recognised[:6])
        findings.append(make("LA302", f"claims name {len(families)} different base families: {detail}"))
    return findings


# ------------------------------------------------------------------------------------------------------
# header-only entry point (tests, tools)


class _ZeroSource:
    """A TensorSource that knows shapes only: values read as zeros (widths need no values)."""

    def __init__(self, tensors: Mapping[str, Any]):
        self.tensors = tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def dtype(self, name: str) -> str:
        return self.tensors[name].dtype

    def array(self, name: str):
        import numpy as np

        return np.zeros(self.shape(name), dtype=np.float64)


def layers_from_tensors(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None):
    """(FPLayers, FormatResult) from tensor names and shapes alone, through the same format and adapter code."""
    from audit import adapters, formats

    fr = formats.parse(tensors, metadata)
    src = _ZeroSource(tensors)
    out = []
    for g in fr.groups:
        shapes = {role: tuple(tensors[n].shape) for role, n in g.parts.items()}
        adapter = adapters.detect(g, shapes)
        if adapter is None:
            continue
        a = adapter.analyse(g, src, fr.scale)
        out.append(_fp_layer(g.key, g.component, g.module, a.in_features, a.out_features))
    return out, fr


def identify_tensors(
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    claims: Sequence[Claim] = (),
    rules: Mapping[str, Family] | None = None,
) -> Fingerprint:
    """Fingerprint from ``{name: TensorMeta}`` (no tensor data): for tests and header-only callers."""
    layers, fr = layers_from_tensors(tensors, metadata)
    fp, _ = identify(layers, claims=claims, domain=fr.domain_hint, domain_reason=fr.domain_reason, rules=rules)
    return fp
