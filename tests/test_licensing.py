"""License chains and policy verdicts (audit/licensing) over the shipped rules.

Records are built by hand (a fingerprint with its candidates, claims, sidecar flags), so each test says exactly
what the tensors and the metadata showed; tests/test_cli_license.py runs the same over real files end to end.
"""

from __future__ import annotations

import pytest

from audit import fingerprint
from audit import licensing as L
from audit.record import AuditRecord, Candidate, Claim, Claims, FileInfo, Fingerprint, LicenseClaim

POLICIES = ("commercial-hosted-service", "commercial-outputs-only", "internal-research", "open-redistribution")
LETTER = {"A": "allow", "C": "allow-with-conditions", "R": "needs-review", "D": "deny"}

# One row per base (every variant of every rules/bases family, or the family when it has none): the verdict
# under each shipped policy, in POLICIES order, with no deployer facts given. A = allow, C = allow with
# conditions, R = needs review, D = deny. Read with rules/lineage.yaml and rules/licenses/*.yaml:
# FLUX.1 [dev] family: non-commercial model, commercial outputs (licenses.md §2.7); schnell, Wan, Qwen-Image,
# Z-Image, HiDream (MIT): permissive; SD1/SD2/SDXL: RAIL use restrictions flow down (conditions); SD3/SD3.5:
# free below USD 1M revenue (unknown without --revenue: review); NoobAI: no commercialisation at all; Pony V6: no
# monetized inference; Tencent: territory and MAU facts needed; facts at level S/U ask for review.
EXPECTED = {
    "anima": "DRCR",
    "anima-2.9b": "DRCR",
    "anima-3.8b": "DRCR",
    "cosmos-predict2-2b": "CCCC",
    "auraflow-v0": "AAAC",
    "pony-v7": "RRRR",
    "cascade-stage-c": "DRCR",
    "cascade-stage-c-lite": "DRCR",
    "chroma1-hd": "AAAC",
    "chroma1-base": "AAAC",
    "chroma1-flash": "AAAC",
    "chroma-unlocked": "AAAC",
    "chroma1-radiance": "AAAC",
    "flux1-dev": "DCCC",
    "flux1-schnell": "AAAC",
    "flux1-kontext": "DCCC",
    "flux1-krea-dev": "DCCC",
    "flux1-fill": "DCCC",
    "flux1-depth": "DCCC",
    "flux1-canny": "DCCC",
    "flux2": "DRCR",
    "flux2-klein-4b": "AAAC",
    "flux2-klein-4b-base": "AAAC",
    "flux2-klein-9b": "DRCR",
    "flux2-klein-9b-base": "DRCR",
    "hidream-i1-full": "AAAC",
    "hidream-i1-dev": "AAAC",
    "hidream-i1-fast": "AAAC",
    "hunyuan-dit-v1.1": "RRCC",
    "hunyuan-dit-v1.2": "RRCC",
    "hunyuan-image-2.1": "RRCR",
    "hunyuan-image-2.1-distilled": "RRCR",
    "hunyuan-video": "RRCC",
    "hunyuan-video-i2v": "RRCC",
    "framepack": "RRRR",
    "kandinsky-5-video-lite": "AAAC",
    "kandinsky-5-image-lite": "AAAC",
    "kandinsky-5-video-pro": "AAAC",
    "kolors-1.0": "RRCC",
    "krea-2-turbo": "RRCR",
    "krea-2-base": "RRCR",
    "ltxv-2b": "RRRR",
    "ltxv-13b": "RRAR",
    "ltx-2": "RRCC",
    "lumina-image-2.0": "AAAC",
    "pixart-alpha": "CCCC",
    "pixart-sigma": "CCCC",
    "qwen-image": "AAAC",
    "qwen-image-edit": "AAAC",
    "qwen-image-edit-2509": "AAAC",
    "qwen-image-edit-2511": "AAAC",
    "qwen-image-layered": "AAAC",
    "sd1.5": "CCCC",
    "sd1.5-inpainting": "CCCC",
    "sd2-base": "CCCC",
    "sd2-depth": "CCCC",
    "sd2-inpainting": "CCCC",
    "sd2-768-v": "CCCC",
    "sd3-medium": "RRCC",
    "sd35-large": "RRCC",
    "sd35-large-turbo": "RRCC",
    "sd35-medium": "RRCC",
    "sdxl-base": "CCCC",
    "pony": "DRCR",
    "illustrious": "RRRR",
    "noobai": "DDCR",
    "playground-v2.5": "RRCR",
    "sdxl-turbo": "DRCC",
    "ssd-1b": "CCCC",
    "vega": "CCCC",
    "sdxl-refiner-1.0": "CCCC",
    "wan2.1-t2v-1.3b": "AAAC",
    "wan2.1-t2v-14b": "AAAC",
    "wan2.1-i2v-14b": "AAAC",
    "wan2.2-t2v-a14b": "AAAC",
    "wan2.2-i2v-a14b": "AAAC",
    "wan2.2-ti2v-5b": "AAAC",
    "z-image-turbo": "AAAC",
    "z-image-base": "AAAC",
    "ming-image": "RRRR",
}


def record(family: str, candidates=(), *, claims=(), licenses=(), permissions=None, confidence="high"):
    rules = fingerprint.load_rules()
    fam = rules.get(family)
    cands = []
    for cid in candidates:
        owner = next((f for f in rules.values() if cid == f.id or any(v.id == cid for v in f.variants)), None)
        name = owner.name if owner and owner.id == cid else next(v.name for v in owner.variants if v.id == cid)
        cands.append(Candidate(id=cid, family=owner.id, name=name))
    fp = Fingerprint(family=family, name=fam.name if fam else None, confidence=confidence, candidates=cands)
    return AuditRecord(file=FileInfo(path="x.safetensors", name="x.safetensors", size=1), fingerprint=fp,
                       claims=Claims(base_claims=list(claims), licenses=list(licenses), permissions=permissions))


def settings(*policies, assume=(), **facts):
    return L.Settings(policies=tuple(L.load_policy(p) for p in (policies or POLICIES)), facts=facts,
                      assume=tuple(assume))


def verdicts(rec) -> str:
    return "".join(next(k for k, v in LETTER.items() if v == p.verdict) for p in rec.policies)


def codes(rec) -> list[str]:
    return [f.code for f in rec.findings]


def _bases():
    out = []
    for fam in sorted(fingerprint.load_rules().values(), key=lambda f: f.id):
        out += [(fam.id, v.id) for v in fam.variants] or [(fam.id, None)]
    return out


def test_expected_table_covers_every_base():
    assert sorted(b or f for f, b in _bases()) == sorted(EXPECTED)


@pytest.mark.parametrize("family, variant", _bases(), ids=lambda x: x or "-")
def test_every_base_gets_its_license_and_verdicts(family, variant):
    rec = record(family, [variant] if variant else [])
    L.apply(rec, settings())
    assert verdicts(rec) == EXPECTED[variant or family]
    lineage = rec.licensing.lineages
    assert len(lineage) == 1 and lineage[0].id == (variant or family)
    entry = L.knowledge().lineage[variant or family]
    assert [(link.license.id, link.role) for link in lineage[0].chain] == list(entry.chain)
    for p in rec.policies:
        for r in p.reasons + p.conditions:
            # every reason that rests on a license cites it: id, URL, and the clause for per-item rules
            if r.license and r.license != "unknown":
                assert r.url and r.license in L.knowledge().licenses
    assert "Not legal advice" in rec.licensing.disclaimer


@pytest.mark.parametrize("variant, license_id", [
    ("sd1.5", "creativeml-openrail-m"), ("sd2-768-v", "creativeml-openrail-pp-m-2022-11-24"),
    ("sdxl-base", "creativeml-openrail-pp-m-2023-07-26"), ("sd35-large", "stability-ai-community-2024-07-05"),
    ("flux1-dev", "flux-1-dev-nc-v1.1.1"), ("flux1-kontext", "flux-1-dev-nc-v1.1.1"),
    ("flux1-schnell", "apache-2.0"), ("hunyuan-video", "tencent-hunyuan-community-video-2024-12-03"),
    ("wan2.2-ti2v-5b", "apache-2.0"), ("hidream-i1-full", "mit"), ("kolors-1.0", "kolors-2024-07-06"),
])
def test_known_mappings(variant, license_id):
    assert L.knowledge().lineage[variant].chain[0] == (license_id, "base")


def test_flux_dev_schnell_ambiguity_denies_hosting_unless_asserted():
    flux = ["flux1-dev", "flux1-schnell", "flux1-kontext", "flux1-krea-dev"]
    rec = record("flux1", flux)
    L.apply(rec, settings("commercial-hosted-service"))
    pv = rec.policies[0]
    assert pv.verdict == "deny"
    assert pv.by_lineage == {"flux1-dev": "deny", "flux1-schnell": "allow", "flux1-kontext": "deny",
                             "flux1-krea-dev": "deny"}
    assert rec.licensing.basis == "candidates"
    assert "LA408" in codes(rec) and "LA400" in codes(rec)
    deny = next(r for r in pv.reasons if r.rule == "model-not-commercial")
    assert deny.license == "flux-1-dev-nc-v1.1.1" and "github.com/black-forest-labs/flux" in deny.url
    assert any(n.rule == "ambiguous-base" and "--assume-base" in n.message for n in pv.notes)

    rec = record("flux1", flux)
    L.apply(rec, settings("commercial-hosted-service", assume=["flux1-schnell"]))
    assert rec.policies[0].verdict == "allow"
    assert rec.licensing.basis == "asserted" and rec.licensing.asserted == "flux1-schnell"
    assert [lin.id for lin in rec.licensing.lineages] == ["flux1-schnell"]
    assert "LA411" in codes(rec) and "LA400" not in codes(rec)


def test_assertion_the_tensors_rule_out_is_ignored_and_other_families_untouched():
    rec = record("flux1", ["flux1-dev", "flux1-schnell"])
    L.apply(rec, settings("commercial-hosted-service", assume=["flux1-fill"]))
    assert rec.licensing.basis == "candidates" and "LA410" in codes(rec)
    rec = record("sdxl", ["sdxl-base"])
    L.apply(rec, settings("commercial-hosted-service", assume=["flux1-schnell"]))  # a batch-wide assertion
    assert rec.licensing.basis == "candidates" and "LA410" not in codes(rec)
    rec = record("unknown")
    L.apply(rec, settings("commercial-hosted-service", assume=["sdxl-base"]))
    assert rec.licensing.basis == "asserted" and rec.policies[0].verdict == "allow-with-conditions"


def test_lineage_claims_narrow_the_candidates():
    claim = Claim(source="metadata", key="ss_sd_model_name", value="ponyDiffusionV6XL.safetensors",
                  family="sdxl", variant="pony", verdict="agrees")
    sdxl = ["sdxl-base", "pony", "illustrious", "noobai"]
    rec = record("sdxl", sdxl, claims=[claim])
    L.apply(rec, settings("commercial-hosted-service"))
    assert rec.licensing.basis == "claimed" and [lin.id for lin in rec.licensing.lineages] == ["pony"]
    assert "LA409" in codes(rec)
    pv = rec.policies[0]
    assert pv.verdict == "deny" and any(r.rule == "monetized-inference" for r in pv.reasons)
    # a claim the tensors contradict narrows nothing
    bad = Claim(source="metadata", key="ss_sd_model_name", value="x", family="sdxl", variant="pony",
                verdict="contradicts")
    rec = record("sdxl", sdxl, claims=[bad])
    L.apply(rec, settings("commercial-hosted-service"))
    assert rec.licensing.basis == "candidates" and len(rec.licensing.lineages) == 4
    assert rec.policies[0].verdict == "deny"  # NoobAI forbids any commercialisation: strictest applies


@pytest.mark.parametrize("revenue, expected", [
    (None, "needs-review"), (500_000, "allow-with-conditions"), (1_000_000, "allow-with-conditions"),
    (1_000_001, "deny"),
])
def test_stability_revenue_ceiling_is_more_than_one_million(revenue, expected):
    rec = record("sd3.5-large", ["sd35-large"])
    facts = {} if revenue is None else {"revenue_usd": float(revenue)}
    L.apply(rec, settings("commercial-hosted-service", **facts))
    pv = rec.policies[0]
    assert pv.verdict == expected
    if expected == "allow-with-conditions":
        texts = " ".join(c.message for c in pv.conditions)
        assert "Powered by Stability AI" in texts and "register" in texts.lower()


@pytest.mark.parametrize("revenue, expected", [(9_999_999, "allow-with-conditions"), (10_000_000, "deny")])
def test_ltx2_revenue_ceiling_is_at_least_ten_million(revenue, expected):
    rec = record("ltx-video", ["ltx-2"])
    L.apply(rec, settings("commercial-hosted-service", revenue_usd=float(revenue)))
    assert rec.policies[0].verdict == expected


@pytest.mark.parametrize("territories, expected", [
    (["US"], "allow-with-conditions"), (["US", "DE"], "deny"), (["EU"], "deny"), (["KR"], "deny"),
    (["GB"], "deny"),
])
def test_hunyuan_video_territory(territories, expected):
    rec = record("hunyuan-video", ["hunyuan-video"])
    L.apply(rec, settings("commercial-hosted-service", territories=territories, mau=1000.0))
    pv = rec.policies[0]
    assert pv.verdict == expected
    if expected == "deny":
        assert any(r.rule == "territory" and r.clause for r in pv.reasons)


def test_held_commercial_license_lifts_the_deny():
    rec = record("flux1", ["flux1-dev"])
    L.apply(rec, settings("commercial-hosted-service", commercial_licenses_held=["flux-1-dev-non-commercial"]))
    assert rec.policies[0].verdict == "allow-with-conditions"


def test_declared_apache_on_flux_dev_conflicts():
    rec = record("flux1", ["flux1-dev"], licenses=[LicenseClaim(source="metadata", key="modelspec.license",
                                                                value="Apache-2.0")])
    L.apply(rec, settings("open-redistribution"))
    d = rec.licensing.declared[0]
    assert d.license == "apache-2.0" and d.verdict == "conflicts"
    assert "LA403" in codes(rec)
    assert rec.policies[0].verdict == "deny"
    assert any(r.rule == "declared-license-conflicts" for r in rec.policies[0].reasons)
    # the same claim on an ambiguous dev/schnell file: consistent only with schnell, no LA403
    rec = record("flux1", ["flux1-dev", "flux1-schnell"],
                 licenses=[LicenseClaim(source="readme", key="license", value="apache-2.0")])
    L.apply(rec, settings("open-redistribution"))
    assert rec.licensing.declared[0].verdict == "unverifiable" and "LA403" not in codes(rec)


def test_stricter_author_license_binds():
    rec = record("sdxl", ["sdxl-base"], licenses=[LicenseClaim(source="readme", key="license",
                                                               value="cc-by-nc-4.0")])
    L.apply(rec, settings("commercial-hosted-service"))
    assert rec.licensing.declared[0].verdict == "more-restrictive"
    assert rec.policies[0].verdict in ("deny", "needs-review")
    assert any(r.license == "cc-by-nc-4.0" for r in rec.policies[0].reasons)


def test_unrecognised_and_disagreeing_claims():
    rec = record("sdxl", ["sdxl-base"], licenses=[
        LicenseClaim(source="metadata", key="license", value="My Own License v9"),
        LicenseClaim(source="readme", key="license", value="openrail++"),
        LicenseClaim(source="readme", key="license_name", value="mit"),
    ])
    L.apply(rec, settings("internal-research"))
    found = codes(rec)
    assert "LA404" in found and "LA406" in found
    assert [c.verdict for c in rec.licensing.declared][0] == "unrecognised"


def test_civitai_flags():
    flags = {"allowCommercialUse": ["Image", "RentCivit", "Rent", "Sell"], "sell_model": True,
             "paid_generation": True, "civitai_generation": True, "sell_images": True, "allowNoCredit": False}
    rec = record("flux1", ["flux1-dev"], permissions=flags)
    L.apply(rec, settings("commercial-outputs-only"))
    assert "LA405" in codes(rec)
    none = {"allowCommercialUse": ["None"], "sell_model": False, "paid_generation": False,
            "civitai_generation": False, "sell_images": False}
    rec = record("sdxl", ["sdxl-base"], permissions=none)
    L.apply(rec, settings("commercial-hosted-service", "commercial-outputs-only"))
    assert [p.verdict for p in rec.policies] == ["deny", "deny"]
    assert rec.policies[0].reasons[0].rule == "civitai-paid-generation"


def test_not_diffusion_and_unknown_need_review():
    for fam in ("unknown", "not-diffusion"):
        rec = record(fam)
        L.apply(rec, settings())
        assert rec.licensing.basis == "unknown"
        assert [p.verdict for p in rec.policies] == ["needs-review"] * 4


def test_apply_replaces_previous_results():
    rec = record("flux1", ["flux1-dev"])
    L.apply(rec, settings("commercial-hosted-service"))
    L.apply(rec, settings("commercial-hosted-service", assume=["flux1-dev"]))
    assert codes(rec).count("LA400") == 1 and len(rec.policies) == 1


def test_resolve_license_aliases_urls_and_titles():
    assert L.resolve_license("CreativeML OpenRAIL-M") == "creativeml-openrail-m"
    assert L.resolve_license("flux-1-dev-non-commercial-license") == "flux-1-dev-nc-v1.1.1"
    assert L.resolve_license("APACHE 2.0") == "apache-2.0" or L.resolve_license("apache-2.0") == "apache-2.0"
    lic = L.knowledge().licenses["flux-1-dev-nc-v1.1.1"]
    assert L.resolve_license(lic.url) == lic.id
    assert L.resolve_license("Copyright (c) 2022\n\nCreativeML Open RAIL-M\ndated August 22, 2022") \
        == "creativeml-openrail-m"
    assert L.resolve_license("some words") is None


def test_settings_key_changes_with_what_changes_results():
    a = L.settings_key(settings("commercial-hosted-service"))
    assert a == L.settings_key(settings("commercial-hosted-service"))
    assert a != L.settings_key(settings("commercial-hosted-service", revenue_usd=1.0))
    assert a != L.settings_key(settings("commercial-hosted-service", assume=["flux1-dev"]))
    assert a != L.settings_key(settings("internal-research"))
