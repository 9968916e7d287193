"""SARIF, JUnit, scan table and license view renderers, fed hand-built records full of hostile text."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

import pytest
from audit.reports import junit, license_view, sarif, scan_view
from rich.console import Console

from audit.findings import catalogue, make
from audit.record import (
    AuditRecord,
    ChainLink,
    FileInfo,
    Fingerprint,
    Hashes,
    LicenseClaim,
    LicenseRef,
    Licensing,
    Lineage,
    PolicyVerdict,
    Reason,
)

# ESC sequences that are not colour codes (clear screen, OSC window title), rich markup, HTML, CDATA end, NUL,
# vertical tab, bidi override, a lone surrogate, XML/JSON metacharacters
HOSTILE = ("[bold]B[/bold][link=http://evil]L[/link] \x1b[2J\x1b]0;pwn\x07 <script>alert(1)</script> ]]> "
           "\x00\x0b\u202e\ud800 &amp; \"q\" 'a' \ufffe")
LONG = "L" * 10_000
SHA = "AB" * 32


def _hashes() -> Hashes:
    return Hashes(sha256=SHA, autov1=None, autov2=SHA[:10], autov3=SHA, blake3="00" * 32, crc32="85114A0D",
                  data_offset=8)


def _flux_licensing(value: str) -> Licensing:
    nc = LicenseRef(id="flux-1-dev-nc-v1.1.1", name="FLUX.1 [dev] Non-Commercial License", version="1.1.1",
                    published="2024-11-05", url="https://example.invalid/flux-dev-license", level="P",
                    spdx="LicenseRef-FLUX-1-dev-NC")
    apache = LicenseRef(id="apache-2.0", name="Apache License 2.0", version="2.0", url="https://example.invalid/apache",
                        level="S", spdx="Apache-2.0")
    author = LicenseRef(id="mit", name="MIT", level="U")
    return Licensing(
        basis="candidates", basis_detail="shapes allow " + value, asserted=None,
        lineages=[
            Lineage(id="flux1-dev", family="flux1", name="FLUX.1 [dev]",
                    chain=[ChainLink(role="base", license=nc, via="lineage flux1-dev (rules/lineage.yaml)"),
                           ChainLink(role="lora_author", license=author, via="metadata modelspec.license")],
                    note="dev weights"),
            Lineage(id="flux1-schnell", family="flux1", name="FLUX.1 [schnell]",
                    chain=[ChainLink(role="base", license=apache, via="lineage flux1-schnell")]),
        ],
        declared=[LicenseClaim(source="metadata", key="modelspec.license", value=value, license=None,
                               verdict="unrecognised", reason="not a known license: " + value),
                  LicenseClaim(source="sidecar", key="license", value="MIT", license="mit", verdict="conflicts",
                               reason="grants more than the base")],
        civitai={"allowCommercialUse": ["Sell", value], "allowDerivatives": True, "allowNoCredit": False,
                 "baseModel": value},
    )


def _deny_record() -> AuditRecord:
    deny = PolicyVerdict(
        policy="commercial", name="Commercial SaaS", verdict="deny",
        reasons=[Reason(rule="nc-base", action="deny", message="base license forbids commercial use " + HOSTILE,
                        remediation="license the base commercially", license="flux-1-dev-nc-v1.1.1",
                        clause="§2(d)", url="https://example.invalid/flux-dev-license#2d", lineage="flux1-dev")],
        conditions=[Reason(rule="notice", action="condition", message="keep the license notice",
                           license="apache-2.0", clause="§4(d)", url="https://example.invalid/apache#4",
                           lineage="flux1-schnell")],
        notes=[Reason(rule="outputs", action="note", message="outputs may be used commercially",
                      license="flux-1-dev-nc-v1.1.1", clause="§4(a)")],
        by_lineage={"flux1-dev": "deny", "flux1-schnell": "allow-with-conditions"},
        context={"commercial": True, "hosted": True})
    review = PolicyVerdict(policy="research", name="Research", verdict="needs-review",
                           reasons=[Reason(rule="unknown-claim", action="review", message="author claim " + HOSTILE)])
    findings = [
        make("LA400", "policy commercial denies this adapter", "policy:commercial"),
        make("LA401", "policy research needs review", "policy:research"),
        make("LA403", "declared license " + HOSTILE + " conflicts", "metadata " + HOSTILE),
        make("LA153", None, HOSTILE),
        make("LA407", LONG, LONG),
        make("LA125"),
    ]
    return AuditRecord(
        file=FileInfo(path="loras/" + HOSTILE + " x.safetensors", name=HOSTILE + " x.safetensors", size=1234),
        findings=findings, hashes=_hashes(),
        fingerprint=Fingerprint(family="flux1", name="FLUX.1", confidence="high"),
        licensing=_flux_licensing(HOSTILE), policies=[deny, review], timing={"read": 0.25, "spectra": 0.5})


def _conditions_record() -> AuditRecord:
    cond = PolicyVerdict(policy="commercial", name="Commercial SaaS", verdict="allow-with-conditions",
                         conditions=[Reason(rule="notice", action="condition", message="keep the notice",
                                            license="apache-2.0", clause="§4(d)")])
    research = PolicyVerdict(policy="research", name="Research", verdict="allow")
    lic = Licensing(basis="claimed", basis_detail="ss_base_model_version",
                    lineages=[Lineage(id="sdxl", family="sdxl", name="SDXL 1.0", chain=[ChainLink(
                        role="base", license=LicenseRef(id="openrail++-m", name="CreativeML Open RAIL++-M",
                                                        level="P"), via="lineage sdxl")])])
    return AuditRecord(file=FileInfo(path="loras/ok dir/café.safetensors", name="café.safetensors", size=10),
                       findings=[make("LA402", "policy commercial allows with conditions", "policy:commercial"),
                                 make("LA404", None, "metadata license")],
                       fingerprint=Fingerprint(family="sdxl", confidence="medium"), licensing=lic,
                       policies=[cond, research])


def _error_record() -> AuditRecord:
    err = make("LA106", "header is not strict JSON: " + HOSTILE)
    return AuditRecord(file=FileInfo(path="loras/" + LONG + HOSTILE + ".safetensors", name="bad", size=3),
                       status="error", error=err, findings=[err])


def _clean_record() -> AuditRecord:
    allow = [PolicyVerdict(policy="commercial", name="Commercial SaaS", verdict="allow"),
             PolicyVerdict(policy="research", name="Research", verdict="allow")]
    return AuditRecord(file=FileInfo(path="/abs/elsewhere/clean.safetensors", name="clean.safetensors", size=5),
                       fingerprint=Fingerprint(family="sd1", confidence="high"), licensing=Licensing(),
                       policies=allow, hashes=_hashes())


def _records() -> list[AuditRecord]:
    return [_deny_record(), _conditions_record(), _error_record(), _clean_record()]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202e\ud800-\udfff]")


# ---------------------------------------------------------------- SARIF


def test_sarif_structure_rules_and_levels():
    doc = sarif.render(_records(), tool_version="0.1.0")
    log = json.loads(doc)
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json" and log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "lora-audit" and driver["semanticVersion"] == "0.1.0"
    used = sorted({f.code for r in _records() for f in r.findings})
    assert [rule["id"] for rule in driver["rules"]] == used
    for rule in driver["rules"]:
        entry = catalogue()[rule["id"]]
        assert rule["shortDescription"]["text"] == entry.title
        assert rule["properties"]["severity"] == entry.severity
        assert rule["name"] and re.fullmatch(r"[A-Za-z0-9]+", rule["name"])
    expected_level = {"critical": "error", "error": "error", "warning": "warning", "info": "note"}
    assert len(run["results"]) == sum(len(r.findings) for r in _records())
    for res in run["results"]:
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] == expected_level[catalogue()[res["ruleId"]].severity]
    levels = {res["ruleId"]: res["level"] for res in run["results"]}
    assert levels["LA400"] == "error" and levels["LA401"] == "warning" and levels["LA402"] == "note"
    assert levels["LA125"] == "error"
    # deterministic: input order does not matter, keys are sorted
    assert sarif.render(list(reversed(_records())), tool_version="0.1.0") == doc
    assert doc == json.dumps(log, sort_keys=True, indent=2, ensure_ascii=True)


def test_sarif_escapes_hostile_text_and_encodes_uris():
    doc = sarif.render(_records(), tool_version="0.1.0")
    assert doc.isascii()
    log = json.loads(doc)
    for s in _strings(log):
        assert not UNSAFE.search(s), s[:80]
        s.encode("utf-8")  # no lone surrogates anywhere
    run = log["runs"][0]
    deny = next(r for r in run["results"] if r["ruleId"] == "LA403")
    text = deny["message"]["text"]
    assert "\\x1b\\[2J" in text and "\\x00\\x0b\\u202e\\ud800" in text
    # brackets escaped (SARIF 3.11.6), so no viewer turns "[x](y)" into a link
    assert "\\[bold\\]B\\[/bold\\]" in text and not re.search(r"(?<!\\)[\[\]]", text)
    where = deny["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
    assert where.startswith("metadata [bold]B") and "\\x1b[2J" in where and "\\u202e" in where
    long = next(r for r in run["results"] if r["ruleId"] == "LA407")
    assert len(long["message"]["text"]) < 2100
    uri_ok = re.compile(r"[A-Za-z0-9\-._~/%:]+")
    for res in run["results"]:
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri_ok.fullmatch(uri), uri[:120]
    uris = {a["location"]["uri"] for a in run["artifacts"]}
    assert "loras/ok%20dir/caf%C3%A9.safetensors" in uris
    assert "file:///abs/elsewhere/clean.safetensors" in uris
    (hostile,) = [u for u in uris if u.startswith("loras/%5Bbold%5DB")]
    assert "%1B%5B2J%1B%5D0%3Bpwn%07" in hostile and "%3Cscript%3E" in hostile and "%5D%5D%3E" in hostile
    assert "%00%0B%E2%80%AE" in hostile and "%ED%A0%80" in hostile  # NUL, VT, U+202E, lone surrogate bytes
    (long_uri,) = [u for u in uris if u.startswith("loras/LLL")]
    assert long_uri.endswith(".safetensors") and len(long_uri) > 10_000  # a URI is never cut


def test_sarif_base_uri_relative_locations(tmp_path):
    rec = _conditions_record()
    rec.file.path = str(tmp_path / "sub dir" / "a#b?.safetensors")
    outside = _clean_record()
    log = json.loads(sarif.render([rec, outside], tool_version="0.1.0", base_uri=str(tmp_path)))
    run = log["runs"][0]
    base = run["originalUriBaseIds"]["SRCROOT"]["uri"]
    assert base.startswith("file:///") and base.endswith("/")
    locs = {r["ruleId"]: r["locations"][0]["physicalLocation"]["artifactLocation"] for r in run["results"]}
    assert locs["LA402"] == {"uri": "sub%20dir/a%23b%3F.safetensors", "uriBaseId": "SRCROOT", "index": 1}
    assert run["artifacts"][0]["location"] == {"uri": "file:///abs/elsewhere/clean.safetensors"}
    # a file:// base gives the same answer
    log2 = json.loads(sarif.render([rec, outside], tool_version="0.1.0", base_uri="file://" + str(tmp_path)))
    assert log2["runs"][0]["results"] == run["results"]


def test_sarif_policy_properties_fingerprints_and_notifications():
    log = json.loads(sarif.render(_records(), tool_version="0.1.0"))
    run = log["runs"][0]
    by_code = {}
    for res in run["results"]:
        by_code.setdefault(res["ruleId"], []).append(res)
    (deny,) = by_code["LA400"]
    props = deny["properties"]
    assert props["policy"] == "commercial" and props["verdict"] == "deny"
    assert props["reasons"][0]["clause"] == "§2(d)" and props["reasons"][0]["license"] == "flux-1-dev-nc-v1.1.1"
    assert "\\x1b" in props["reasons"][0]["message"]
    assert props["conditions"][0]["rule"] == "notice"
    assert deny["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "policy:commercial"
    assert deny["partialFingerprints"] == {"fileSha256/v1": SHA.lower()}
    assert by_code["LA401"][0]["properties"]["verdict"] == "needs-review"
    assert by_code["LA402"][0]["properties"]["verdict"] == "allow-with-conditions"
    assert "partialFingerprints" not in by_code["LA402"][0]  # no hashes in that record
    assert "policy" not in by_code["LA403"][0]["properties"]
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is True  # an unreadable file is a result, not a tool failure
    (note,) = inv["toolExecutionNotifications"]
    assert note["associatedRule"]["id"] == "LA106" and note["associatedRule"]["index"] == \
        [r["id"] for r in run["tool"]["driver"]["rules"]].index("LA106")
    assert len(by_code["LA106"]) == 1  # the error is not reported twice
    # a worker failure makes the run unsuccessful; an error only in record.error still becomes a result
    crash = AuditRecord(file=FileInfo(path="c.safetensors", name="c", size=1), status="error",
                        error=make("LA128"))
    log = json.loads(sarif.render([crash], tool_version="0.1.0"))
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is False
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["LA128"]


# ---------------------------------------------------------------- JUnit


def _junit(fail_on: str, fail_verdict: str = "deny", records=None) -> ET.Element:
    doc = junit.render(records or _records(), suite="lora-audit scan " + HOSTILE, fail_on=fail_on,
                       fail_verdict=fail_verdict)
    assert doc.isascii()
    return ET.fromstring(doc)  # raises on anything not well-formed


def test_xml_parser_is_strict_enough_to_catch_bad_escaping():
    # the control: the very characters of HOSTILE make a naive document ill-formed
    for bad in ("<a>\x0b</a>", "<a>\x00</a>", "<a>&#11;</a>", "<a b=\"x\x1b\"/>", "<a>\ufffe</a>", "<a>&#xD800;</a>"):
        with pytest.raises(ET.ParseError):
            ET.fromstring(bad)


@pytest.mark.parametrize("fail_on,fail_verdict,failures", [
    ("error", "deny", 1),  # deny record (LA400 error, verdict deny)
    ("never", "needs-review", 1),  # deny record only: the conditions record is below needs-review
    ("never", "allow-with-conditions", 2),
    ("info", "never", 2),  # deny record and the conditions record (LA402 info); the clean record has no finding
    ("never", "never", 0),
    ("critical", "never", 1),  # LA125 in the deny record
    ("warning", "allow", 3),  # every analysed record has a verdict at or above allow
])
def test_junit_counts(fail_on, fail_verdict, failures):
    root = _junit(fail_on, fail_verdict)
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 4 and suite.get("tests") == "4" and root.get("tests") == "4"
    assert suite.get("failures") == str(failures) and root.get("failures") == str(failures)
    assert suite.get("errors") == "1" and suite.get("skipped") == "0"
    assert sum(1 for c in cases if c.find("failure") is not None) == failures
    assert sum(1 for c in cases if c.find("error") is not None) == 1


def test_junit_content_and_escaping():
    root = _junit("error")
    suite = root.find("testsuite")
    assert "\\x1b[2J" in suite.get("name") and "<script>" in suite.get("name")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    deny = next(c for n, c in cases.items() if n.startswith("loras/[bold]"))
    name = deny.get("name")
    assert "\\x1b[2J" in name and "\\x00\\x0b\\u202e\\ud800" in name and "]]>" in name and "\\ufffe" in name
    assert deny.get("classname") == suite.get("name")
    failure = deny.find("failure")
    assert failure.get("type") == "policy" and "policy commercial (Commercial SaaS): deny" in failure.get("message")
    assert "base license forbids commercial use" in failure.text and "§2(d)" in failure.text
    assert "remedy: license the base commercially" in failure.text
    assert "LA400 error" in failure.text and "LA401" not in failure.text.split("LA400")[0]
    out = deny.find("system-out").text
    assert "policy research (Research): needs-review" in out and "keep the license notice" in out
    assert "per lineage: flux1-dev=deny, flux1-schnell=allow-with-conditions" in out
    assert "inherited licenses: flux-1-dev-nc-v1.1.1, apache-2.0" in out
    err = next(c for c in cases.values() if c.find("error") is not None)
    assert err.find("error").get("type") == "LA106"
    assert err.find("error").get("message").startswith("LA106: header is not strict JSON: [bold]")
    assert len(err.get("name")) < 1200  # 10,000-character path cut
    for el in root.iter():
        for s in [el.text or "", el.tail or "", *el.attrib.values()]:
            assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202e\ud800-\udfff\ufffe\uffff]", s)
    assert float(suite.get("time")) == pytest.approx(0.75)


def test_junit_deterministic_without_timing_and_rejects_bad_thresholds():
    a = junit.render(_records(), suite="s", fail_on="error", timing=False)
    assert a == junit.render(_records(), suite="s", fail_on="error", timing=False) and 'time="' not in a
    with pytest.raises(ValueError):
        junit.render(_records(), suite="s", fail_on="severe")
    with pytest.raises(ValueError):
        junit.render(_records(), suite="s", fail_on="error", fail_verdict="forbid")


# ---------------------------------------------------------------- terminal views


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, record=True, width=120, force_terminal=True, color_system="truecolor"), buf


SGR = re.compile(r"\x1b\[[0-9;]*m")


def _assert_terminal_safe(console: Console, buf: io.StringIO) -> str:
    raw = buf.getvalue()
    assert "\x1b" not in SGR.sub("", raw), "an escape sequence other than rich's colours reached the terminal"
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e\ud800-\udfff]", SGR.sub("", raw))
    plain = console.export_text(styles=False)
    assert "\x1b" not in plain
    return plain


def test_scan_rows_are_one_escaped_line_each():
    console, buf = _console()
    ids = ["commercial", "research"]
    scan_view.header(console, ids)
    for r in _records():
        scan_view.row(console, r, ids)
    plain = _assert_terminal_safe(console, buf)
    lines = plain.rstrip("\n").split("\n")
    assert len(lines) == 5 and all(len(line) <= 120 for line in lines)
    head, deny, cond, err, clean = lines
    assert head.startswith("commercial") and "file" in head
    assert deny.startswith("DENY") and "review" in deny and "critical" in deny and "flux1 high" in deny
    assert "flux-1-dev-nc-v1.1.1" in deny and "loras/[bold]B[/bo" in deny
    assert deny.rstrip().endswith("x.safetensors")  # shortened in the middle: the end stays
    assert cond.startswith("cond.") and "allow" in cond and "sdxl medium" in cond and "openrail++-m" in cond
    assert "ERROR LA106" in err and err.rstrip().endswith(".safetensors") and "…" in err
    assert clean.startswith("allow") and "clean" in clean and "unknown" in clean
    # the verdict is coloured: DENY is printed bold red
    assert re.search(r"\x1b\[[0-9;]*1;31m|\x1b\[[0-9;]*31;1m|\x1b\[1m\x1b\[31m", buf.getvalue().split("DENY")[0][-40:] + "")


def test_scan_row_short_hostile_name_and_wide_console():
    console, buf = _console()
    rec = _conditions_record()
    rec.file.path = "\x1b[2J\x07[bold]x[/bold]\u202e.st"
    scan_view.row(console, rec)  # policy columns from the record itself
    plain = _assert_terminal_safe(console, buf)
    assert plain.rstrip().endswith("\\x1b[2J\\x07[bold]x[/bold]\\u202e.st")
    assert plain.count("\n") == 1
    # CJK names are two cells wide: still one line of at most 120 cells
    console, buf = _console()
    rec.file.path = "模型" * 200 + ".safetensors"
    scan_view.row(console, rec)
    plain = _assert_terminal_safe(console, buf)
    assert plain.count("\n") == 1 and plain.rstrip().endswith(".safetensors") and "…" in plain
    assert console.measure(plain.rstrip("\n")).maximum == 120  # shortened to fit, not cut short


@pytest.mark.parametrize("width", [60, 80, 200])
def test_scan_layout_follows_console_width(width):
    buf = io.StringIO()
    console = Console(file=buf, record=True, width=width, force_terminal=True)
    ids = ["commercial", "research"]
    scan_view.header(console, ids)
    for r in _records():
        scan_view.row(console, r, ids)
    lines = console.export_text(styles=False).rstrip("\n").split("\n")
    assert len(lines) == 5 and all(console.measure(line).maximum <= width for line in lines)
    # the file column starts at the same cell in the header and every row, and the name keeps its end
    start = lines[0].index("file")
    name = lines[4][start:].rstrip()
    assert name.startswith("/abs/") and name.endswith(".safetensors")
    assert (name == "/abs/elsewhere/clean.safetensors") == (width >= 120)
    assert ("inherited l" in lines[0]) == (width >= 80)
    assert lines[2].rstrip().endswith(".safetensors")


def test_tally_summary_and_dict():
    tally = scan_view.Tally()
    recs = _records()
    for i, r in enumerate(recs):
        tally.add(r, cached=i == 3)
    tally.seconds = 2.0
    d = scan_view.summary_dict(tally)
    json.dumps(d)
    assert (d["files"], d["analysed"], d["cached"], d["errors"]) == (4, 3, 1, 1)
    assert d["verdicts"]["commercial"] == {"allow": 1, "allow-with-conditions": 1, "deny": 1}
    assert d["verdicts"]["research"] == {"allow": 2, "needs-review": 1}
    assert d["strictest_verdict"] == {"allow": 1, "allow-with-conditions": 1, "deny": 1}
    assert d["families"] == {"flux1": 1, "sd1": 1, "sdxl": 1}
    assert d["licenses"] == {"apache-2.0": 1, "flux-1-dev-nc-v1.1.1": 1, "openrail++-m": 1, "unknown": 1}
    assert d["severities"] == {"clean": 1, "info": 1, "error": 1, "critical": 1}
    assert d["error_codes"] == {"LA106": 1} and d["findings"]["LA106"] == 1
    assert list(d["verdicts"]["commercial"]) == ["allow", "allow-with-conditions", "deny"]
    console, buf = _console()
    tally.render(console)
    plain = _assert_terminal_safe(console, buf)
    assert "4 files: 3 analysed, 1 from cache, 1 errors" in plain
    assert "policy commercial" in plain and "deny 1" in plain and "LA106 1" in plain and "flux1 1" in plain
    # summary() also takes the records themselves
    console2, buf2 = _console()
    scan_view.summary(console2, recs, seconds=1.0)
    assert "4 files: 4 analysed, 0 from cache" in _assert_terminal_safe(console2, buf2)


def test_license_view_disclaimer_first_verdicts_and_escaping():
    console, buf = _console()
    license_view.render(_deny_record(), console)
    plain = _assert_terminal_safe(console, buf)
    assert plain.lstrip().startswith("Not legal advice")
    assert "lineage basis candidates" in plain
    for needle in ("flux1-dev", "flux1-schnell", "FLUX.1 [dev] Non-Commercial License", "1.1.1", "2024-11-05",
                   "https://example.invalid/flux-dev-license", "Apache License 2.0",
                   "Policy Commercial SaaS (commercial): deny", "Policy Research (research): needs-review",
                   "§2(d)", "https://example.invalid/flux-dev-license#2d", "keep the license notice", "§4(d)",
                   "outputs may be used commercially", "per lineage", "allowCommercialUse", "unrecognised",
                   "conflicts"):
        assert needle in plain, needle
    assert "[bold]B[/bold]" in plain and "[link=http://evil]" in plain  # markup stays literal
    assert "\\x1b[2J" in plain and "\\u202e" in plain and "\\ud800" in plain
    assert plain.index("Not legal advice") < plain.index("lineage basis") < plain.index("Policy Commercial SaaS")
    # the verdict line is coloured
    assert re.search(r"\x1b\[[0-9;]*m\s*deny", buf.getvalue())


def test_license_view_without_licensing_and_for_errors():
    console, buf = _console()
    license_view.render(_error_record(), console)
    plain = _assert_terminal_safe(console, buf)
    assert plain.lstrip().startswith("Not legal advice") and "LA106" in plain
    assert "no license evaluation" in plain
    console, buf = _console()
    license_view.render(_conditions_record(), console)
    plain = _assert_terminal_safe(console, buf)
    assert "allow-with-conditions" in plain and "keep the notice" in plain and "openrail++-m" in plain
