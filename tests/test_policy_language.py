"""The policy expression language: a safe, three-valued subset of Python syntax (audit/licensing)."""

from __future__ import annotations

import pytest

from audit import licensing as L
from audit.licensing import UNKNOWN, PolicyError, compile_expr, evaluate, render_template

REGIONS = {"EU": frozenset({"DE", "FR", "IT", "IE"})}


def ev(expr: str, **roots):
    base = {"license": None, "item": None, "context": {}, "lora": None, "lineage": None}
    base.update(roots)
    return evaluate(compile_expr(expr), L._Env(base, REGIONS))


def test_literals_comparisons_and_paths():
    lic = {"grant": {"model_commercial": "no"}, "family": "flux-dev"}
    assert ev("license.grant.model_commercial == 'no'", license=lic) is True
    assert ev("license.grant.model_commercial != 'no'", license=lic) is False
    assert ev("license.family in ['a', 'flux-dev']", license=lic) is True
    assert ev("license.family not in ['a']", license=lic) is True
    assert ev("license.missing.deeper == null", license=lic) is True
    assert ev("1 < 2 <= 2 < 3") is True
    assert ev("1 < 2 > 3") is False
    assert ev("true and not false") is True


def test_unknown_facts_are_three_valued():
    ctx = {"revenue_usd": None, "territories": None, "mode": "hosted_inference"}
    assert ev("context.revenue_usd > 1000000", context=ctx) is UNKNOWN
    assert ev("compare(context.revenue_usd, 'gt', 1000000)", context=ctx) is UNKNOWN
    # Kleene logic: false dominates and, true dominates or
    assert ev("context.revenue_usd > 1 and false", context=ctx) is False
    assert ev("context.revenue_usd > 1 or true", context=ctx) is True
    assert ev("context.revenue_usd > 1 and true", context=ctx) is UNKNOWN
    assert ev("not (context.revenue_usd > 1)", context=ctx) is UNKNOWN
    assert ev("known(context.revenue_usd)", context=ctx) is False
    assert ev("known(context.mode)", context=ctx) is True
    assert ev("intersects(context.territories, ['EU'])", context=ctx) is UNKNOWN
    # a license field that is null is a plain null, not unknown
    assert ev("license.version == null", license={"version": None}) is True


def test_compare_boundaries():
    ctx = {"revenue_usd": 1_000_000.0}
    assert ev("compare(context.revenue_usd, 'gt', 1000000)", context=ctx) is False
    assert ev("compare(context.revenue_usd, 'gte', 1000000)", context=ctx) is True
    assert ev("compare(context.revenue_usd, 'bogus', 1000000)", context=ctx) is UNKNOWN
    assert ev("compare('text', 'gt', 1)") is UNKNOWN


def test_intersects_expands_region_groups():
    assert ev("intersects(['de'], ['EU'])") is True
    assert ev("intersects(['EU'], ['FR', 'US'])") is True
    assert ev("intersects(['UK'], ['GB', 'KR'])") is True
    assert ev("intersects(['US'], ['EU', 'GB'])") is False
    assert ev("intersects([], ['EU'])") is False


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "license.__class__",
    "license._private",
    "open('/etc/passwd')",
    "[x for x in [1]]",
    "lambda: 1",
    "license['grant']",
    "a_name_that_is_not_a_root == 1",
    "len(x=1)",
    "1 if true else 2",
    "b'bytes' == 1",
    "(1).real",
    "",
    "x" * 3000,
    "1 +",
])
def test_rejects_anything_outside_the_language(expr):
    with pytest.raises(PolicyError):
        compile_expr(expr)


def test_templates_substitute_paths_only():
    roots = {"license": {"name": "X {context.secret}", "amount": 1000000}, "context": {"mau": None},
             "item": None, "lora": None, "lineage": None}
    out = render_template("{license.name} above {license.amount} USD; users {context.mau}; {0} {license.__class__}",
                          roots)
    # the substituted value is not re-expanded, numbers are grouped, unknown facts say so, no format() runs
    assert out == "X {context.secret} above 1,000,000 USD; users unknown; {0} {license.__class__}"


def test_parse_fact_types():
    assert L.parse_fact("revenue_usd", "2.5M") == 2_500_000
    assert L.parse_fact("revenue_usd", "$800k") == 800_000
    assert L.parse_fact("mau", "1,000,000") == 1_000_000
    assert L.parse_fact("territories", "US, eu") == ["US", "eu"]
    assert L.parse_fact("core_business", "yes") is True
    assert L.parse_fact("mau", "unknown") is None
    with pytest.raises(PolicyError):
        L.parse_fact("revenue_usd", "lots")
    with pytest.raises(PolicyError):
        L.parse_fact("core_business", "maybe")


def _policy(**rule):
    doc = {"schema": "lora-audit/policy/v1", "id": "p", "name": "P", "context": {"mode": "hosted_inference"},
           "rules": [{"id": "r", "action": "deny", "message": "m", **rule}]}
    return L._policy(doc, "test", "test", "0")


@pytest.mark.parametrize("rule, problem", [
    ({"action": "ban"}, "action"),
    ({"when": "open('x')"}, "only the functions"),
    ({"bogus": 1}, "unknown field"),
    ({"applies_to": ["everyone"]}, "applies_to"),
    ({"for_each": "grants"}, "for_each"),
    ({"message": "{secret.path}"}, "placeholder"),
    ({"if_unknown": "maybe"}, "if_unknown"),
])
def test_policy_validation(rule, problem):
    with pytest.raises(PolicyError, match=problem):
        _policy(**rule)


def test_policy_needs_known_mode_and_rules():
    with pytest.raises(PolicyError, match="context.mode"):
        L._policy({"schema": "lora-audit/policy/v1", "id": "p", "name": "P", "context": {"mode": "x"},
                   "rules": [{"id": "r", "action": "deny", "message": "m"}]}, "t", "t", "0")
    with pytest.raises(PolicyError, match="at least one rule"):
        L._policy({"schema": "lora-audit/policy/v1", "id": "p", "name": "P",
                   "context": {"mode": "outputs_only"}, "rules": []}, "t", "t", "0")


def test_user_policy_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("schema: lora-audit/policy/v1\nid: mine\nname: Mine\ncontext: {mode: outputs_only}\n"
                 "rules:\n  - {id: r, action: note, message: hello}\n", encoding="utf-8")
    pol = L.load_policy(str(p))
    assert pol.id == "mine" and pol.source == str(p)
    with pytest.raises(PolicyError, match="unknown policy"):
        L.load_policy("no-such-policy")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (L.MAX_POLICY_BYTES + 10))
    with pytest.raises(PolicyError, match="larger"):
        L.load_policy(str(big))
