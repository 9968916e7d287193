"""The fingerprint engine against small hand-written rules: scoring, ties, variants, claims, validation.

The shipped family rules are tested in tests/test_bases_*.py; here the rules are written by the test so that
every expected outcome can be worked out by hand from SCHEMA.md's scoring rules.
"""

from __future__ import annotations

import textwrap

import pytest

from audit import fingerprint as fpm
from audit.record import Claim
from tests import fpsynth

ALPHA = """
schema: 1
family: alpha
name: Alpha
prior: 10
sources: {S1: "example/repo @ 0000000, model.py"}
signals:
  - {id: names, kind: module, what: double blocks, match: '(?:^|_)double_blocks_\\d+_', weight: 2, anchor: true, source: S1}
  - {id: hidden, kind: width, what: hidden 3072, match: 'double_blocks_\\d+_img_attn_proj$', dim: out, one_of: [3072], weight: 4, source: S1}
  - {id: count, kind: blocks, what: 19 double blocks, match: '(?:^|_)double_blocks_(\\d+)_', count: 19, weight: 2, source: S1}
  - {id: no-dgl, kind: forbid, what: distilled guidance layer, match: 'distilled_guidance_layer', weight: 4, source: S1}
variants:
  - {id: alpha-dev, name: Alpha dev, note: same shapes as schnell}
  - {id: alpha-schnell, name: Alpha schnell, note: same shapes as dev}
  - id: alpha-fill
    name: Alpha fill
    note: img_in input 384 when trained
    signals:
      - {id: fill-in, kind: width, what: img_in input 384, match: '(?:^|_)img_in$', dim: in, one_of: [384], weight: 4, source: S1}
claims:
  - {match: '^alpha$', source: S1}
  - {match: '^alpha-dev$', variant: alpha-dev, source: S1}
  - {match: '^alpha-schnell$', variant: alpha-schnell, source: S1}
"""

BETA = """
schema: 1
family: beta
name: Beta
prior: 5
sources: {S1: "example/repo @ 0000000, beta.py"}
signals:
  - {id: names, kind: module, what: double blocks, match: '(?:^|_)double_blocks_\\d+_', weight: 2, anchor: true, source: S1}
  - {id: hidden, kind: width, what: hidden 3072, match: 'double_blocks_\\d+_img_attn_proj$', dim: out, one_of: [3072], weight: 4, source: S1}
  - {id: no-mod, kind: forbid, what: per-block modulation, match: '_mod_lin$', weight: 4, source: S1}
  - {id: dgl, kind: module, what: distilled guidance layer, match: 'distilled_guidance_layer', weight: 4, source: S1}
claims:
  - {match: '^beta$', source: S1}
  - {match: '^alpha_or_beta$', also: [alpha], source: S1}
"""

GAMMA = """
schema: 1
family: gamma
name: Gamma
prior: 1
sources: {S1: "example/repo @ 0000000, unet.py"}
signals:
  - {id: unet, kind: module, what: UNet blocks, match: '(?:^|_)down_blocks_', weight: 2, anchor: true, source: S1}
  - {id: ctx, kind: width, what: context 768, match: 'attn2_to_k$', dim: in, one_of: [768], weight: 4, source: S1}
  - {id: ctx-any, kind: width, what: a 768 input, match: '.', dim: in, one_of: [768], require: any, weight: 2, anchor: true, source: S1}
claims:
  - {match: '^sd_1\\.5$', source: S1}
  - {match: 'gammamix', keys: [ss_sd_model_name], search: true, source: S1}
"""


@pytest.fixture()
def rules(tmp_path):
    for name, text in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)):
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
    return fpm.load_rules(tmp_path)


def _double(indices, *, hidden=3072, mod=False, extra=()):
    mods = []
    for i in indices:
        mods.append((f"double_blocks.{i}.img_attn.proj", hidden, hidden))
        mods.append((f"double_blocks.{i}.img_attn.qkv", 3 * hidden, hidden))
        if mod:
            mods.append((f"double_blocks.{i}.img_mod.lin", 6 * hidden, hidden))
    return fpsynth.lora(list(mods) + list(extra), "kohya")


def _run(tensors, rules, claims=()):
    layers, fr = fpm.layers_from_tensors(tensors)
    return fpm.identify(layers, claims=list(claims), rules=rules)


def test_full_file_is_high_confidence_with_variants_as_candidates(rules):
    fp, findings = _run(_double(range(19), mod=True), rules)
    assert fp.family == "alpha" and fp.confidence == "high" and not fp.partial
    assert [c.id for c in fp.candidates] == ["alpha-dev", "alpha-schnell", "alpha-fill"]
    assert fp.candidates[0].supports == ["same shapes as schnell"]
    # beta anchored but contradicted by the modulation layers; its evidence is still reported
    assert fp.scores == {"alpha": 2 + 4 + 2, "beta": 2 + 4 - 4}
    assert any(e.family == "beta" and e.signal == "no-mod" and e.outcome == "contradict" for e in fp.evidence)
    assert [f.code for f in findings] == ["LA304"]


def test_partial_file_ties_and_lower_bound(rules):
    fp, findings = _run(_double(range(4)), rules)
    # alpha: 2 + 4 (count is a lower bound, weight 0); beta: 2 + 4: a tie, alpha wins on prior
    assert fp.family == "alpha" and fp.confidence == "medium" and fp.partial
    assert "beta" in fp.reason and "lower bounds" in fp.reason
    assert fp.candidates[-1].id == "beta" and fp.candidates[-1].family == "beta"
    count = next(e for e in fp.evidence if e.family == "alpha" and e.signal == "count")
    assert (count.outcome, count.observed, count.expected) == ("lower-bound", "4 (highest index 3)", "19")


def test_tie_is_resolved_by_a_claim_and_said_so(rules):
    claim = Claim(source="metadata", key="ss_base_model_version", value="Beta")
    fp, findings = _run(_double(range(4)), rules, [claim])
    assert fp.family == "beta" and fp.confidence == "medium" and "metadata claim" in fp.reason
    assert claim.family == "beta" and claim.verdict == "agrees"
    assert not [f for f in findings if f.code in ("LA300", "LA301")]


def test_contradicting_claim_gives_la300_on_high_confidence(rules):
    claim = Claim(source="metadata", key="ss_base_model_version", value="sd_1.5")
    fp, findings = _run(_double(range(19), mod=True), rules, [claim])
    assert fp.family == "alpha" and fp.confidence == "high"
    assert claim.family == "gamma" and claim.verdict == "contradicts"
    la300 = [f for f in findings if f.code == "LA300"]
    assert len(la300) == 1 and "gamma" in la300[0].message and "alpha" in la300[0].message


def test_contradicting_claim_is_only_a_warning_on_medium_confidence(rules):
    claim = Claim(source="metadata", key="modelspec.architecture", value="sd_1.5/lora")
    fp, findings = _run(_double(range(4)), rules, [claim])
    assert fp.confidence == "medium" and claim.verdict == "contradicts"
    assert [f.code for f in findings if f.code.startswith("LA30") and f.code != "LA304"] == ["LA301"]


def test_variant_claims_are_listed_first_never_chosen(rules):
    claims = [Claim("metadata", "modelspec.architecture", "alpha-schnell/lora")]
    fp, _ = _run(_double(range(19), mod=True), rules, claims)
    assert fp.family == "alpha"
    assert [c.id for c in fp.candidates] == ["alpha-schnell", "alpha-dev", "alpha-fill"]
    assert "claim modelspec.architecture = alpha-schnell/lora" in fp.candidates[0].supports
    assert claims[0].variant == "alpha-schnell" and claims[0].verdict == "agrees"


def test_variant_signals_narrow_the_candidates(rules):
    fill = _double(range(19), mod=True, extra=[("img_in", 3072, 384)])
    fp, _ = _run(fill, rules)
    cand = {c.id: c for c in fp.candidates}
    assert "img_in input 384 (observed 384)" in cand["alpha-fill"].supports
    plain = _double(range(19), mod=True, extra=[("img_in", 3072, 64)])
    fp, _ = _run(plain, rules)
    assert [c.id for c in fp.candidates] == ["alpha-dev", "alpha-schnell"]  # fill ruled out by img_in 64


def test_width_contradiction_and_forbid(rules):
    fp, findings = _run(_double(range(19), hidden=4096), rules)
    # both families say 3072: both contradicted; alpha still ranks first, at low confidence
    assert fp.family == "alpha" and fp.confidence == "low"
    hidden = next(e for e in fp.evidence if e.family == "alpha" and e.signal == "hidden")
    assert (hidden.outcome, hidden.observed, hidden.expected) == ("contradict", "4096", "3072")
    assert "LA303" in [f.code for f in findings]
    fp, _ = _run(_double(range(4), extra=[("distilled_guidance_layer.in_proj", 5120, 64)]), rules)
    assert fp.family == "beta"  # alpha forbids it; beta names it


def test_require_any_anchor_for_index_named_layers(rules):
    # cloneofsimo-style: module names carry no architecture; a 768-wide input still anchors gamma
    tensors = fpsynth.lora([("0", 320, 768), ("1", 320, 320)], "kohya")
    fp, _ = _run(tensors, rules)
    assert fp.family == "gamma"
    assert fp.confidence == "low"  # score 2 < THIN_SCORE


def test_no_anchor_is_unknown(rules):
    fp, findings = _run(fpsynth.lora([("layers.0.feed_forward.w1", 10, 10)], "kohya"), rules)
    assert (fp.family, fp.confidence, fp.candidates) == ("unknown", "none", [])
    assert [f.code for f in findings] == ["LA303"]


def test_unrecognised_claim_and_disagreeing_claims(rules):
    claims = [Claim("metadata", "ss_base_model_version", "something-new"),
              Claim("metadata", "ss_base_model_version", "alpha"),
              Claim("metadata", "ss_sd_model_name", "my_GammaMix_v2.safetensors")]
    fp, findings = _run(_double(range(19), mod=True), rules, claims)
    codes = [f.code for f in findings]
    assert "LA310" in codes and "LA302" in codes
    assert claims[0].verdict == "unrecognised" and claims[1].verdict == "agrees"
    assert claims[2].family == "gamma" and claims[2].verdict == "contradicts"


def test_claim_naming_a_group_of_families_agrees_with_any_of_them(rules):
    claims = [Claim("metadata", "modelspec.architecture", "Alpha or Beta/lora"),
              Claim("metadata", "ss_base_model_version", "alpha")]
    fp, findings = _run(_double(range(19), mod=True), rules, claims)
    assert fp.family == "alpha" and claims[0].family == "beta"
    assert [c.verdict for c in claims] == ["agrees", "agrees"]
    assert not [f for f in findings if f.code in ("LA300", "LA301", "LA302")]
    # without the group, the same words contradict
    lone = [Claim("metadata", "modelspec.architecture", "Beta")]
    fp, findings = _run(_double(range(19), mod=True), rules, lone)
    assert lone[0].verdict == "contradicts" and "LA300" in [f.code for f in findings]


def test_keys_restrict_claim_rules(rules):
    # 'gammamix' is a search rule for ss_sd_model_name only; the same text elsewhere names nothing
    assert fpm.resolve_claim("ss_sd_model_name", "x_gammamix.ckpt", rules) == ("gamma", None)
    assert fpm.resolve_claim("ss_base_model_version", "x_gammamix.ckpt", rules) is None
    # rules without keys do not apply to the special keys
    assert fpm.resolve_claim("ss_sd_model_name", "alpha", rules) is None


@pytest.mark.parametrize("raw, norm", [
    ("stable-diffusion-xl-v1-base/lora", "stable-diffusion-xl-v1-base"),
    ("  SD 1.5 ", "sd_1.5"),
    ("Flux.1-dev/LoRA", "flux.1-dev"),
    ("a/b", "a/b"),
    ("ｆｌｕｘ", "flux"),  # NFKC full-width
])
def test_normalise_claim(raw, norm):
    assert fpm.normalise_claim(raw) == norm


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("match: '(?:^|_)down_blocks_'", "match: '(?:^|_down_blocks_'"), "bad regular expression"),
    (lambda t: t.replace("source: S1}", "source: S9}", 1), "source 'S9'"),
    (lambda t: t.replace("anchor: true, ", ""), "anchor"),
    (lambda t: t.replace("family: gamma", "family: delta"), "file name must be delta.yaml"),
    (lambda t: t.replace("kind: width, what: context", "kind: size, what: context"), "kind must be"),
    (lambda t: t.replace("one_of: [768], weight: 4", "one_of: [], weight: 4"), "one_of"),
    (lambda t: t.replace("weight: 2, anchor: true, source: S1}\n  - {id: ctx,",
                         "weight: 2, anchor: true, source: S1, colour: red}\n  - {id: ctx,"), "unknown field"),
])
def test_rules_are_validated(tmp_path, mutate, message):
    (tmp_path / "gamma.yaml").write_text(mutate(textwrap.dedent(GAMMA)))
    with pytest.raises(ValueError) as e:
        fpm.load_rules(tmp_path)
    assert "gamma.yaml" in str(e.value) and message in str(e.value)


def test_yaml_tags_are_not_executed(tmp_path):
    (tmp_path / "gamma.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        fpm.load_rules(tmp_path)


def test_shipped_rules_load_and_cover_design_ids():
    rules = fpm.load_rules(strict=True)  # every pattern compiled: the shipped files are valid whole
    design = {"sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "sd3", "sd3.5-medium", "sd3.5-large", "flux1",
              "flux2", "flux2-klein-4b", "flux2-klein-9b", "chroma", "auraflow", "pixart", "hunyuan-dit",
              "hunyuan-video", "hunyuan-image", "wan", "ltx-video", "qwen-image", "z-image", "lumina2", "kolors",
              "cascade", "hidream", "anima", "krea2", "kandinsky5"}
    assert design <= set(rules), sorted(design - set(rules))


def test_rules_cache_saves_parsing_never_checking(tmp_path, monkeypatch):
    from importlib import resources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LORA_AUDIT_NO_CACHE", raising=False)
    folder = resources.files("audit.rules").joinpath("bases")
    first = fpm._load(folder, strict=False)
    cached = list((tmp_path / "lora-audit").glob("bases-*.json"))
    assert len(cached) == 1
    again = fpm._load(folder, strict=False)
    assert {k: (f.name, [s.id for s in f.signals]) for k, f in again.items()} == \
           {k: (f.name, [s.id for s in f.signals]) for k, f in first.items()}
    cached[0].write_text("{not json")  # a damaged cache is ignored and rewritten
    assert set(fpm._load(folder, strict=False)) == set(first)
    import json
    docs = json.loads(cached[0].read_text())
    docs[0]["signals"][0]["kind"] = "bogus"  # a tampered cache is still validated
    cached[0].write_text(json.dumps(docs))
    with pytest.raises(ValueError, match="kind must be"):
        fpm._load(folder, strict=False)
    monkeypatch.setenv("LORA_AUDIT_NO_CACHE", "1")
    assert set(fpm._load(folder, strict=False)) == set(first)
