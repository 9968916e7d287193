"""The license knowledge base (rules/licenses/*.yaml, rules/lineage.yaml, rules/regions.yaml) is well formed.

Plain PyYAML (safe_load) on the files shipped as package data ``audit.rules``; the checks mirror
rules/licenses/SCHEMA.md. A few known facts are pinned so a wrong edit fails loudly.
"""

from __future__ import annotations

import copy
import re
from importlib import resources

import pytest
import yaml

RULES = resources.files("audit.rules")

TOP_KEYS = [
    "schema", "id", "family", "name", "version", "published", "supersedes", "spdx", "spdx_ref", "url", "mirrors",
    "level", "checked", "aliases", "title_patterns", "grant", "conditions", "obligations", "output_restrictions",
    "derivatives", "use_restrictions", "commercial_license", "notes", "open_questions",
]
GRANT_VALUES = {
    "model_commercial": {"yes", "no", "conditional", "unknown"},
    "output_commercial": {"yes", "no", "conditional", "unclear", "unknown"},
    "hosted_service": {"yes", "no", "conditional", "unknown"},
    "redistribution": {"yes", "no", "conditional", "unknown"},
}
LEVELS = {"P", "P-tag", "S", "U"}
CONDITION_KEYS = {
    "revenue_ceiling": {"amount", "comparison", "aggregate_affiliates", "effect"},
    "mau_ceiling": {"amount", "comparison", "aggregate_affiliates", "effect"},
    "muu_ceiling": {"amount", "comparison", "aggregate_affiliates", "effect"},
    "core_business": set(),
    "registration": {"effect"},
    "territory_exclusion": {"regions", "applies_to_outputs"},
    "non_production_only": set(),
    "research_only": set(),
    "no_monetized_inference": {"effect"},
}
CEILINGS = {"revenue_ceiling", "mau_ceiling", "muu_ceiling"}
EFFECTS = {"terminates", "needs_separate_license", "deemed_licensed_after_registration"}
OBLIGATION_KINDS = {
    "flow_down_use_restrictions", "provide_license_copy", "notice_file", "display_attribution", "mark_modifications",
    "content_filter_or_review", "ai_disclosure", "keep_guardrails", "provide_source", "register_with_licensor",
    "aup_compliance", "keep_notices",
}
OUTPUT_KINDS = {"no_training_competing_models", "no_training_foundational_models", "no_improving_other_models",
                "territory", "must_follow_aup", "no_commercial_use"}
TRIGGERS = {"use", "distribution", "hosted_service", "commercial_use", "outputs"}
INHERITANCE = {"same_license", "restrictions_flow", "copyleft", "free"}
ROLES = {"base", "intermediate", "component"}
ISO2 = re.compile(r"[A-Z]{2}")
SLUG = re.compile(r"[a-z][a-z0-9_]*")


def normalise(text: str) -> str:
    """The alias normalisation of rules/licenses/SCHEMA.md."""
    return re.sub(r"[\s_.\-]+", "-", text.strip().casefold()).strip("-")


def _load(entry) -> object:
    return yaml.safe_load(entry.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def regions() -> dict:
    return _load(RULES.joinpath("regions.yaml"))


@pytest.fixture(scope="module")
def licenses() -> dict[str, dict]:
    out = {}
    for entry in sorted(RULES.joinpath("licenses").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out[entry.name] = _load(entry)
    assert len(out) >= 40, "the license knowledge base lost files"
    return out


@pytest.fixture(scope="module")
def by_id(licenses) -> dict[str, dict]:
    return {doc["id"]: doc for doc in licenses.values()}


@pytest.fixture(scope="module")
def lineage() -> dict:
    return _load(RULES.joinpath("lineage.yaml"))


@pytest.fixture(scope="module")
def bases() -> dict[str, list[str]]:
    """family id -> its variant ids, read from rules/bases/*.yaml."""
    out = {}
    for entry in RULES.joinpath("bases").iterdir():
        if entry.name.endswith(".yaml"):
            doc = _load(entry)
            out[doc["family"]] = [v["id"] for v in doc.get("variants") or []]
    assert len(out) >= 25
    return out


def problems(doc: object, name: str, region_groups: set[str]) -> list[str]:
    """Every way ``doc`` (a parsed license file called ``name``) breaks the schema; [] when it is valid."""
    p: list[str] = []
    if not isinstance(doc, dict):
        return [f"{name}: not a mapping"]
    if list(doc) != TOP_KEYS:
        p.append(f"{name}: keys {list(doc)} differ from the schema (missing {set(TOP_KEYS) - set(doc)}, extra "
                 f"{set(doc) - set(TOP_KEYS)})")
        return p
    if doc["schema"] != "lora-audit/license/v1":
        p.append(f"{name}: bad schema")
    lid = doc["id"]
    if not (isinstance(lid, str) and re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", lid) and name == f"{lid}.yaml"):
        p.append(f"{name}: id {lid!r} must be kebab-case and equal the file name")
    for key in ("family", "name"):
        if not (isinstance(doc[key], str) and doc[key].strip()):
            p.append(f"{name}: {key} must be a non-empty string")
    for key in ("version", "spdx", "url"):
        if doc[key] is not None and not isinstance(doc[key], str):
            p.append(f"{name}: {key} must be a string or null")
    if doc["published"] is not None and not (isinstance(doc["published"], str)
                                             and re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["published"])):
        p.append(f"{name}: published must be a quoted YYYY-MM-DD or null")
    if not (isinstance(doc["checked"], str) and re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", doc["checked"])):
        p.append(f"{name}: checked must be a quoted YYYY-MM[-DD]")
    if doc["level"] not in LEVELS:
        p.append(f"{name}: level {doc['level']!r}")
    ref = doc["spdx_ref"]
    if doc["spdx"] is None:
        if not (isinstance(ref, str) and ref.startswith("LicenseRef-")):
            p.append(f"{name}: spdx_ref must be LicenseRef-... when spdx is null")
    elif ref != doc["spdx"]:
        p.append(f"{name}: spdx_ref must equal spdx")
    for key in ("supersedes", "mirrors", "aliases", "title_patterns", "notes", "open_questions"):
        if not (isinstance(doc[key], list) and all(isinstance(x, str) and x.strip() for x in doc[key])):
            p.append(f"{name}: {key} must be a list of non-empty strings")
    grant = doc["grant"]
    if not (isinstance(grant, dict) and set(grant) == set(GRANT_VALUES)):
        p.append(f"{name}: grant needs exactly {sorted(GRANT_VALUES)}")
    else:
        for key, allowed in GRANT_VALUES.items():
            if not isinstance(grant[key], str) or grant[key] not in allowed:
                p.append(f"{name}: grant.{key}={grant[key]!r} (must be a string in {sorted(allowed)})")
    for list_key, kinds in (("conditions", set(CONDITION_KEYS)), ("obligations", OBLIGATION_KINDS),
                            ("output_restrictions", OUTPUT_KINDS)):
        entries = doc[list_key]
        if not isinstance(entries, list):
            p.append(f"{name}: {list_key} must be a list")
            continue
        for i, e in enumerate(entries):
            w = f"{name} {list_key}[{i}]"
            if not isinstance(e, dict):
                p.append(f"{w}: not a mapping")
                continue
            if e.get("kind") not in kinds:
                p.append(f"{w}: kind {e.get('kind')!r}")
                continue
            if not (isinstance(e.get("clause"), str) and e["clause"].strip()):
                p.append(f"{w}: needs a clause")
            if not (isinstance(e.get("text"), str) and e["text"].strip()):
                p.append(f"{w}: needs a text")
            if list_key == "conditions":
                extra = set(e) - {"kind", "text", "clause"} - CONDITION_KEYS[e["kind"]]
                if extra:
                    p.append(f"{w}: keys {sorted(extra)} do not belong to {e['kind']}")
                if e["kind"] in CEILINGS:
                    amount = e.get("amount")
                    if not (isinstance(amount, int) and not isinstance(amount, bool) and amount > 0):
                        p.append(f"{w}: amount must be a positive integer")
                    if e.get("comparison") not in ("gt", "gte"):
                        p.append(f"{w}: comparison must be gt or gte")
                    if not isinstance(e.get("aggregate_affiliates"), bool):
                        p.append(f"{w}: aggregate_affiliates must be a boolean")
                if "effect" in e and e["effect"] not in EFFECTS:
                    p.append(f"{w}: effect {e['effect']!r}")
                if e["kind"] in CEILINGS and "effect" not in e:
                    p.append(f"{w}: a ceiling needs an effect")
                if e["kind"] == "territory_exclusion":
                    regs = e.get("regions")
                    if not (isinstance(regs, list) and regs and all(
                            isinstance(r, str) and (r in region_groups or ISO2.fullmatch(r)) for r in regs)):
                        p.append(f"{w}: regions must be ISO alpha-2 codes or groups of rules/regions.yaml")
                    if not isinstance(e.get("applies_to_outputs"), bool):
                        p.append(f"{w}: applies_to_outputs must be a boolean")
            elif list_key == "obligations":
                if set(e) != {"kind", "trigger", "text", "url", "clause"}:
                    p.append(f"{w}: keys must be kind, trigger, text, url, clause")
                trig = e.get("trigger")
                if not (isinstance(trig, list) and trig and set(trig) <= TRIGGERS):
                    p.append(f"{w}: trigger must be a non-empty list of {sorted(TRIGGERS)}")
                if e.get("url") is not None and not (isinstance(e["url"], str)
                                                     and re.match(r"(https://|mailto:)", e["url"])):
                    p.append(f"{w}: url must be https://, mailto: or null")
            elif set(e) != {"kind", "text", "clause"}:
                p.append(f"{w}: keys must be kind, text, clause")
    d = doc["derivatives"]
    if not (isinstance(d, dict) and set(d) == {"includes_lora", "inheritance", "author_may_add_terms", "text",
                                                "clause"}):
        p.append(f"{name}: derivatives keys")
    else:
        if d["includes_lora"] not in ("yes", "no", "unclear"):
            p.append(f"{name}: derivatives.includes_lora {d['includes_lora']!r}")
        if d["inheritance"] not in INHERITANCE:
            p.append(f"{name}: derivatives.inheritance {d['inheritance']!r}")
        if d["author_may_add_terms"] not in ("yes", "no", "only_non_conflicting"):
            p.append(f"{name}: derivatives.author_may_add_terms {d['author_may_add_terms']!r}")
        for key in ("text", "clause"):
            if not (isinstance(d[key], str) and d[key].strip()):
                p.append(f"{name}: derivatives.{key} missing")
    u = doc["use_restrictions"]
    if not (isinstance(u, dict) and set(u) == {"source", "url", "categories"}
            and u["source"] in ("inline", "external_aup", "none")
            and isinstance(u["categories"], list) and all(isinstance(c, str) and SLUG.fullmatch(c)
                                                          for c in u["categories"])):
        p.append(f"{name}: use_restrictions malformed")
    elif u["source"] == "external_aup" and not u["url"]:
        p.append(f"{name}: an external AUP needs its url")
    c = doc["commercial_license"]
    if not (isinstance(c, dict) and set(c) == {"available", "contact"} and c["available"] in ("yes", "no", "unknown")
            and (c["contact"] is None or isinstance(c["contact"], str))):
        p.append(f"{name}: commercial_license malformed")
    return p


# ------------------------------------------------------------------------------------------------ licenses


def test_every_license_file_matches_the_schema(licenses, regions):
    groups = set(regions["regions"])
    bad = [msg for name, doc in licenses.items() for msg in problems(doc, name, groups)]
    assert bad == []


def test_the_validator_rejects_broken_files(by_id, regions):
    """problems() must catch the mistakes the schema forbids (so the test above can fail)."""
    groups = set(regions["regions"])
    good = by_id["stability-ai-community-2024-07-05"]
    name = "stability-ai-community-2024-07-05.yaml"
    assert problems(good, name, groups) == []

    def broken(edit):
        doc = copy.deepcopy(good)
        edit(doc)
        return problems(doc, name, groups)

    assert broken(lambda d: d["grant"].__setitem__("model_commercial", True))          # unquoted yes
    assert broken(lambda d: d["grant"].__setitem__("output_commercial", "maybe"))
    assert broken(lambda d: d["conditions"][0].pop("clause"))
    assert broken(lambda d: d["obligations"][0].__setitem__("trigger", ["download"]))
    assert broken(lambda d: d.__setitem__("extra", 1))
    assert broken(lambda d: d.__setitem__("id", "Other"))
    assert broken(lambda d: d["conditions"][0].__setitem__("comparison", ">"))
    assert broken(lambda d: d["conditions"].append({"kind": "territory_exclusion", "regions": ["Europe"],
                                                    "applies_to_outputs": True, "text": "t", "clause": "c"}))
    assert problems(["not", "a", "mapping"], name, groups)
    assert problems(good, "other-name.yaml", groups)


def test_yes_and_no_load_as_strings(licenses):
    for name, doc in licenses.items():
        for value in (*doc["grant"].values(), doc["derivatives"]["includes_lora"],
                      doc["derivatives"]["author_may_add_terms"], doc["commercial_license"]["available"]):
            assert isinstance(value, str), f"{name}: {value!r} is not a string (quote yes/no)"


def test_supersedes_name_existing_earlier_versions(by_id):
    for lid, doc in by_id.items():
        for sup in doc["supersedes"]:
            assert sup in by_id, f"{lid} supersedes unknown {sup}"
            assert sup != lid
            if doc["published"] and by_id[sup]["published"]:
                assert by_id[sup]["published"] <= doc["published"], f"{lid} supersedes a newer text {sup}"


def test_aliases_ids_and_spdx_refs_are_unique_after_normalisation(licenses):
    seen: dict[str, str] = {}
    for name, doc in licenses.items():
        own = {normalise(a) for a in (*doc["aliases"], doc["id"], doc["spdx"] or "", doc["spdx_ref"] or "") if a}
        for key in own:
            assert key not in seen, f"{name}: alias {key!r} also names {seen.get(key)}"
            seen[key] = name
    assert normalise("FLUX.1 [dev] Non-Commercial License") == "flux-1-[dev]-non-commercial-license"
    assert normalise(" Apache_2.0 ") == normalise("apache-2.0") == "apache-2-0"


def test_family_tags_resolve_to_the_expected_text(licenses):
    index = {}
    for doc in licenses.values():
        for a in (*doc["aliases"], doc["id"], doc["spdx"] or "", doc["spdx_ref"]):
            if a:
                index[normalise(a)] = doc["id"]
    expected = {
        "flux-1-dev-non-commercial-license": "flux-1-dev-nc-v1.1.1",
        "FLUX.1 [dev] Non-Commercial License": "flux-1-dev-nc-v1.1.1",
        "openrail++": "creativeml-openrail-pp-m-2023-07-26",
        "creativeml-openrail-m": "creativeml-openrail-m",
        "stabilityai-ai-community": "stability-ai-community-2024-07-05",
        "sai-nc-community": "stability-ai-nc-research-community-2023-11-28",
        "fair-ai-public-license-1.0-sd": "faipl-1.0-sd",
        "faipl-1.0-sd": "faipl-1.0-sd",
        "noob-ai-xl": "noobai-xl",
        "tencent-hunyuan-community": "tencent-hunyuan-community-image-2.1-2025-09-08",
        "nvidia-open-model-license": "nvidia-open-model-license-2025-10-24",
        "ltx-2.x-community-license-agreement": "ltx-2.x-community-2026-08-11",
        "Apache-2.0": "apache-2.0",
        "MIT": "mit",
        "CC-BY-NC-SA-4.0": "cc-by-nc-sa-4.0",
        "openrail": "openrail",
    }
    for alias, lid in expected.items():
        assert index.get(normalise(alias)) == lid, alias
    assert normalise("other") not in index, "'other' is not a license"
    assert normalise("openrail") != normalise("openrail++")


def test_title_patterns_compile_and_identify_one_version(licenses):
    compiled = {doc["id"]: [re.compile(p, re.IGNORECASE) for p in doc["title_patterns"]]
                for doc in licenses.values()}
    samples = {
        "FLUX.1 [dev] Non-Commercial License": "flux-1-dev-nc-v1",
        "FLUX.1 [dev] Non-Commercial License v1.1": "flux-1-dev-nc-v1.1",
        "FLUX.1 [dev] Non-Commercial License v1.1.1": "flux-1-dev-nc-v1.1.1",
        "Copyright (c) 2023 Stability AI CreativeML Open RAIL++-M License dated July 26, 2023":
            "creativeml-openrail-pp-m-2023-07-26",
        "CreativeML Open RAIL++-M License": "creativeml-openrail-pp-m-2022-11-24",
        "CreativeML Open RAIL-M": "creativeml-openrail-m",
        "STABILITY AI COMMUNITY LICENSE AGREEMENT": "stability-ai-community-2024-07-05",
        "STABILITY AI NON-COMMERCIAL RESEARCH COMMUNITY LICENSE AGREEMENT":
            "stability-ai-nc-research-community-2023-11-28",
        "STABLE VIDEO DIFFUSION NON-COMMERCIAL COMMUNITY LICENSE AGREEMENT": "stability-svd-nc-community-2023-11-21",
        "Tencent HunyuanVideo Release Date: December 3, 2024": "tencent-hunyuan-community-video-2024-12-03",
        "Tencent Hunyuan Release Date: 2024/5/14": "tencent-hunyuan-community-2024-05-14",
        "DEEPFLOYD IF LICENSE AGREEMENT": "deepfloyd-if",
        "NVIDIA Open Model License Agreement": "nvidia-open-model-license-2025-10-24",
        "# Fair AI Public License 1.0-SD": "faipl-1.0-sd",
        "Apache License": "apache-2.0",
        "MIT License": "mit",
        "Attribution-NonCommercial 4.0 International": "cc-by-nc-4.0",
        "Attribution-NonCommercial-ShareAlike 4.0 International": "cc-by-nc-sa-4.0",
        "LTX-2 Community License Agreement": "ltx-2-community-2026-01-05",
        "LTX-2.x Community License Agreement": "ltx-2.x-community-2026-08-11",
    }
    for line, expected in samples.items():
        hits = sorted(lid for lid, pats in compiled.items() if any(p.search(line) for p in pats))
        assert hits == [expected], f"{line!r} -> {hits}"


def test_urls_are_not_shared_between_files(licenses):
    seen: dict[str, str] = {}
    for name, doc in licenses.items():
        for url in ([doc["url"]] if doc["url"] else []) + doc["mirrors"]:
            assert url.startswith("https://"), f"{name}: {url}"
            key = re.sub(r"^https://(www\.)?", "", url.casefold()).rstrip("/")
            assert key not in seen, f"{name}: {url} is also listed by {seen.get(key)}"
            seen[key] = name


def test_unknown_and_unverified_entries(by_id):
    unknown = by_id["unknown"]
    assert unknown["level"] == "U" and unknown["aliases"] == [] and unknown["title_patterns"] == []
    assert set(unknown["grant"].values()) == {"unknown"}
    assert set(by_id["openrail"]["grant"].values()) == {"unknown"} and by_id["openrail"]["level"] == "U"
    for doc in by_id.values():
        if doc["level"] in ("S", "U"):
            assert doc["notes"] or doc["open_questions"], f"{doc['id']}: say what is unverified"
    cc = [d for d in by_id.values() if d["family"].startswith("creative-commons")]
    assert len(cc) == 6 and all(d["spdx"] and d["level"] == "S" for d in cc)
    assert {d["spdx"] for d in cc} == {"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0",
                                       "CC-BY-NC-ND-4.0"}


def test_pinned_license_facts(by_id):
    sai = by_id["stability-ai-community-2024-07-05"]
    (rev,) = [c for c in sai["conditions"] if c["kind"] == "revenue_ceiling"]
    assert (rev["amount"], rev["comparison"], rev["effect"], rev["aggregate_affiliates"]) == (
        1_000_000, "gt", "terminates", True)
    assert any(o["kind"] == "display_attribution" and o["text"] == "Powered by Stability AI"
               for o in sai["obligations"])
    assert sai["derivatives"]["includes_lora"] == "yes"
    (ltx,) = [c for c in by_id["ltx-2-community-2026-01-05"]["conditions"] if c["kind"] == "revenue_ceiling"]
    assert (ltx["amount"], ltx["comparison"]) == (10_000_000, "gte")
    # FLUX.1 [dev]: weights non-commercial; outputs commercial except in v1.1, where the sentence was removed
    assert by_id["flux-1-dev-nc-v1.1.1"]["grant"]["model_commercial"] == "no"
    assert by_id["flux-1-dev-nc-v1.1.1"]["grant"]["output_commercial"] == "yes"
    assert by_id["flux-1-dev-nc-v1.1"]["grant"]["output_commercial"] == "unclear"
    assert {o["kind"] for o in by_id["flux-1-dev-nc-v1.1.1"]["obligations"]} >= {"content_filter_or_review",
                                                                                  "ai_disclosure", "notice_file"}
    assert not any(o["kind"] == "content_filter_or_review" for o in by_id["flux-1-dev-nc-v1"]["obligations"])
    assert by_id["flux-1-dev-nc-v1.1.1"]["supersedes"] == ["flux-1-dev-nc-v1.1", "flux-1-dev-nc-v1"]
    (mau,) = [c for c in by_id["kolors-2024-07-06"]["conditions"] if c["kind"] == "mau_ceiling"]
    assert mau["amount"] == 300_000_000
    assert by_id["faipl-1.0-sd"]["derivatives"]["inheritance"] == "copyleft"
    assert any(c["kind"] == "no_monetized_inference" for c in by_id["pony-v6-faipl-modified"]["conditions"])
    assert by_id["apache-2.0"]["grant"] == {"model_commercial": "yes", "output_commercial": "yes",
                                            "hosted_service": "yes", "redistribution": "conditional"}


def _territory(doc) -> set[str] | None:
    hits = [c for c in doc["conditions"] if c["kind"] == "territory_exclusion"]
    assert len(hits) <= 1
    return set(hits[0]["regions"]) if hits else None


def test_tencent_territories(by_id):
    assert _territory(by_id["tencent-hunyuan-community-2024-05-14"]) is None
    assert _territory(by_id["tencent-hunyuan-community-dit-2024-12-17"]) == {"EU"}
    assert _territory(by_id["tencent-hunyuan-community-video-2024-12-03"]) == {"EU", "GB", "KR"}
    for lid in ("tencent-hunyuan-community-dit-2024-12-17", "tencent-hunyuan-community-video-2024-12-03"):
        (terr,) = [c for c in by_id[lid]["conditions"] if c["kind"] == "territory_exclusion"]
        assert terr["applies_to_outputs"] is True


# ------------------------------------------------------------------------------------------------ regions


def test_regions_eu_has_the_27_member_states(regions):
    assert regions["schema"] == "lora-audit/regions/v1"
    eu = regions["regions"]["EU"]
    members = eu["members"]
    assert len(members) == 27 and len(set(members)) == 27
    assert all(isinstance(m, str) and ISO2.fullmatch(m) for m in members)
    assert {"DE", "FR", "IE", "GR", "HR", "CY"} <= set(members)
    assert not {"GB", "UK", "EL", "CH", "NO"} & set(members)
    assert eu["source"] and eu["name"]


# ------------------------------------------------------------------------------------------------ lineage


def test_lineage_covers_every_base(lineage, bases):
    assert lineage["schema"] == "lora-audit/lineage/v1"
    entries = lineage["bases"]
    required = {v for variants in bases.values() for v in variants}
    required |= {fam for fam, variants in bases.items() if not variants}
    missing = sorted(required - set(entries))
    assert missing == [], f"lineage.yaml lacks {missing}"
    known = required | set(bases)
    assert sorted(set(entries) - known) == [], "lineage keys must be variant or family ids of rules/bases"


def test_lineage_entries_are_valid(lineage, by_id):
    for key, entry in lineage["bases"].items():
        assert set(entry) == {"chain", "level", "source", "note"}, key
        assert entry["level"] in LEVELS, key
        assert isinstance(entry["source"], str) and entry["source"].strip(), key
        assert entry["note"] is None or (isinstance(entry["note"], str) and entry["note"].strip()), key
        chain = entry["chain"]
        assert isinstance(chain, list) and chain, key
        for link in chain:
            assert set(link) == {"license", "role"}, key
            assert link["license"] in by_id, f"{key}: unknown license {link['license']}"
            assert link["role"] in ROLES, key
        assert chain[0]["role"] == "base", f"{key}: the chain starts with the base license"
        if any(link["license"] == "unknown" for link in chain):
            assert entry["level"] == "U" and entry["note"], f"{key}: say what is unverified"


def _chain(lineage, key):
    return [(link["license"], link["role"]) for link in lineage["bases"][key]["chain"]]


def test_pinned_lineage(lineage, by_id):
    assert _chain(lineage, "flux1-dev") == [("flux-1-dev-nc-v1.1.1", "base")]
    assert _chain(lineage, "flux1-kontext") == [("flux-1-dev-nc-v1.1.1", "base")]
    assert _chain(lineage, "flux1-schnell") == [("apache-2.0", "base")]
    assert _chain(lineage, "sd1.5") == [("creativeml-openrail-m", "base")]
    assert _chain(lineage, "sd2-768-v") == [("creativeml-openrail-pp-m-2022-11-24", "base")]
    assert _chain(lineage, "sdxl-base") == [("creativeml-openrail-pp-m-2023-07-26", "base")]
    assert _chain(lineage, "sd35-large") == [("stability-ai-community-2024-07-05", "base")]
    assert _chain(lineage, "sd3-medium") == [("stability-ai-community-2024-07-05", "base")]
    assert _chain(lineage, "pony") == [("creativeml-openrail-pp-m-2023-07-26", "base"),
                                       ("pony-v6-faipl-modified", "intermediate")]
    assert ("noobai-xl", "intermediate") in _chain(lineage, "noobai")
    assert _chain(lineage, "hidream-i1-full") == [("mit", "base")]
    assert _chain(lineage, "flux2-klein-4b") == [("apache-2.0", "base")]
    assert _chain(lineage, "flux2-klein-9b")[0][0] == _chain(lineage, "flux2")[0][0]
    assert by_id[_chain(lineage, "flux2")[0][0]]["family"] == "flux-non-commercial-2"
    assert _chain(lineage, "wan2.2-t2v-a14b") == [("apache-2.0", "base")]
    assert _chain(lineage, "kolors-1.0") == [("kolors-2024-07-06", "base")]
    video = by_id[_chain(lineage, "hunyuan-video")[0][0]]
    assert _territory(video) == {"EU", "GB", "KR"}
    assert _territory(by_id[_chain(lineage, "hunyuan-dit-v1.2")[0][0]]) == {"EU"}
    for key in ("ming-image", "ltxv-2b", "pony-v7", "illustrious"):
        assert any(lic == "unknown" for lic, _ in _chain(lineage, key)), key


# ------------------------------------------------------------------------------------------------ loader


def test_the_loader_accepts_the_knowledge_base(lineage, by_id):
    """audit.licensing validates the same files; it must accept them and resolve the common tags."""
    licensing = pytest.importorskip("audit.licensing")
    licensing.knowledge.cache_clear()
    know = licensing.knowledge()
    assert set(know.licenses) == set(by_id)
    assert set(know.lineage) == set(lineage["bases"])
    assert licensing.resolve_license("flux-1-dev-non-commercial-license", know) == "flux-1-dev-nc-v1.1.1"
    assert licensing.resolve_license("openrail++", know) == "creativeml-openrail-pp-m-2023-07-26"
    assert licensing.resolve_license("STABILITY AI COMMUNITY LICENSE AGREEMENT\nLast Updated: July 5, 2024",
                                     know) == "stability-ai-community-2024-07-05"
    assert licensing.resolve_license("other", know) is None
