"""JUnit XML output for CI systems: one test case per file.

A file *fails* when a finding is at or above ``fail_on`` or a policy verdict is at or above ``fail_verdict``
(strictness allow < allow-with-conditions < needs-review < deny); a file that could not be analysed
(``status == "error"``) is an *error*. Reads the records; evaluates nothing.

Every attacker-controlled string yields well-formed XML: it is escaped with ``audit.reports.safe.clean``
(control, bidi and invisible characters and lone surrogates become visible escapes such as ``\\x1b``), any
character XML 1.0 still forbids (U+FFFE, U+FFFF) is escaped the same way, and ElementTree escapes
``& < > "``. No CDATA is used, so ``]]>`` in a value is plain escaped text. The document is ASCII only
(other characters as character references).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Any

from audit.reports.license_view import VERDICT_RANK, verdict_rank
from audit.reports.safe import clean

from audit.findings import SEVERITY_RANK, Finding
from audit.record import AuditRecord, PolicyVerdict, Reason

NEVER = "never"
LINE_LIMIT = 400  # characters of one value on one line
NAME_LIMIT = 1000  # characters of a test-case name (the file path)
MAX_LINES = 200  # lines in one failure or system-out body
# what XML 1.0 forbids (Char production): C0 controls other than tab, LF, CR; surrogates; U+FFFE and U+FFFF
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def xml_safe(value: Any, limit: int | None = LINE_LIMIT) -> str:
    """One line of attacker-controlled text, safe for an XML attribute or text node (before ET's escaping)."""
    return _XML_FORBIDDEN.sub(_xml_escape_char, clean(value, limit))


def _body(lines: Iterable[str]) -> str:
    out = []
    for i, line in enumerate(lines):
        if i == MAX_LINES:
            out.append("… (more lines left out)")
            break
        out.append(line)
    return "\n" + "\n".join(out) + "\n" if out else ""


def _finding_line(f: Finding) -> str:
    line = f"{xml_safe(f.code, 20)} {xml_safe(f.severity, 20)}: {xml_safe(f.message)}"
    if f.where:
        line += f" ({xml_safe(f.where, 200)})"
    return line


def _reason_line(r: Reason, indent: str = "    ") -> str:
    line = f"{indent}- [{xml_safe(r.action, 20)}] {xml_safe(r.message)}"
    cites = " ".join(xml_safe(v, 200) for v in (r.license, r.clause, r.url) if v)
    if cites:
        line += f" ({cites})"
    if r.lineage:
        line += f" [lineage {xml_safe(r.lineage, 60)}]"
    if r.remediation:
        line += f" remedy: {xml_safe(r.remediation)}"
    return line


def _policy_head(p: PolicyVerdict) -> str:
    return f"policy {xml_safe(p.policy, 80)} ({xml_safe(p.name, 120)}): {xml_safe(p.verdict, 40)}"


def _threshold(value: str, ranks: dict[str, int], what: str) -> int | None:
    if value == NEVER:
        return None
    if value not in ranks:
        raise ValueError(f"{what} must be one of {', '.join((*ranks, NEVER))}, not {value!r}")
    return ranks[value]


def failing(record: AuditRecord, fail_on: str, fail_verdict: str = "deny") -> tuple[list[Finding], list[PolicyVerdict]]:
    """The findings at or above ``fail_on`` and the policy verdicts at or above ``fail_verdict``."""
    sev = _threshold(fail_on, SEVERITY_RANK, "fail_on")
    ver = _threshold(fail_verdict, VERDICT_RANK, "fail_verdict")
    findings = [] if sev is None else [f for f in record.findings if SEVERITY_RANK.get(f.severity, 0) >= sev]
    verdicts = [] if ver is None else [p for p in record.policies if verdict_rank(p.verdict) >= ver]
    return findings, verdicts


def _seconds(record: AuditRecord) -> float:
    return float(sum(v for v in record.timing.values() if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0))


def _system_out(record: AuditRecord) -> str:
    lines: list[str] = []
    for p in record.policies:
        lines.append(_policy_head(p))
        lines.extend(_reason_line(r) for r in p.reasons)
        if p.conditions:
            lines.append("  conditions:")
            lines.extend(_reason_line(r) for r in p.conditions)
        if len(p.by_lineage) > 1:
            per = ", ".join(f"{xml_safe(k, 60)}={xml_safe(v, 40)}" for k, v in p.by_lineage.items())
            lines.append(f"  per lineage: {per}")
    lic = record.licensing
    if lic is not None:
        ids = []
        for lin in lic.lineages:
            for link in lin.chain:
                if link.role != "lora_author" and link.license.id not in ids:
                    ids.append(link.license.id)
        lines.append(f"lineage basis: {xml_safe(lic.basis, 40)}; inherited licenses: "
                     f"{', '.join(xml_safe(i, 80) for i in ids) or 'unknown'}")
        lines.append(xml_safe(lic.disclaimer))
    if record.findings:
        worst = max(record.findings, key=lambda f: SEVERITY_RANK.get(f.severity, 0)).severity
        lines.append(f"findings: {len(record.findings)} (highest severity {xml_safe(worst, 20)})")
    return _body(lines)


def render(records: Sequence[AuditRecord], *, suite: str, fail_on: str, fail_verdict: str = "deny",
           timing: bool = True) -> str:
    """JUnit XML: ``<testsuites>`` holding one ``<testsuite name=suite>`` with one test case per record.

    ``fail_on``: info | warning | error | critical | never; ``fail_verdict``: allow | allow-with-conditions |
    needs-review | deny | never. ``timing=False`` leaves out the ``time`` attributes (byte-identical output
    for identical records).
    """
    _threshold(fail_on, SEVERITY_RANK, "fail_on")
    _threshold(fail_verdict, VERDICT_RANK, "fail_verdict")
    suite_name = xml_safe(suite, 200)
    cases: list[ET.Element] = []
    failures = errors = 0
    total = 0.0
    for record in records:
        case = ET.Element("testcase", {"classname": suite_name, "name": xml_safe(record.file.path, NAME_LIMIT)})
        if timing:
            seconds = _seconds(record)
            total += seconds
            case.set("time", f"{seconds:.3f}")
        if record.status == "error":
            errors += 1
            e = record.error
            code = xml_safe(e.code, 20) if e is not None else "error"
            message = e.message if e is not None else "the file could not be analysed"
            el = ET.SubElement(case, "error", {"message": f"{code}: {xml_safe(message)}", "type": code})
            el.text = _body(_finding_line(f) for f in record.findings if f != e) or None
        else:
            bad_findings, bad_verdicts = failing(record, fail_on, fail_verdict)
            if bad_findings or bad_verdicts:
                failures += 1
                parts = [f"{_policy_head(p)}" for p in bad_verdicts]
                if bad_findings:
                    parts.append(f"{len(bad_findings)} finding(s) at or above {fail_on}")
                kind = "policy" if bad_verdicts else xml_safe(bad_findings[0].code, 20)
                el = ET.SubElement(case, "failure", {"message": "; ".join(parts), "type": kind})
                lines: list[str] = []
                for p in bad_verdicts:
                    lines.append(_policy_head(p))
                    lines.extend(_reason_line(r) for r in p.reasons)
                lines.extend(_finding_line(f) for f in bad_findings)
                el.text = _body(lines)
        out = _system_out(record)
        if out:
            ET.SubElement(case, "system-out").text = out
        cases.append(case)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": str(errors), "skipped": "0"}
    root = ET.Element("testsuites", {"name": "lora-audit", **counts})
    ts = ET.SubElement(root, "testsuite", {"name": suite_name, **counts})
    if timing:
        root.set("time", f"{total:.3f}")
        ts.set("time", f"{total:.3f}")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", {"name": "fail_on", "value": xml_safe(fail_on, 40)})
    ET.SubElement(props, "property", {"name": "fail_verdict", "value": xml_safe(fail_verdict, 40)})
    ts.extend(cases)
    ET.indent(root, space="  ")
    doc = ET.tostring(root, encoding="unicode")
    # ASCII only: anything else as a character reference (valid in text and attribute values alike)
    doc = doc.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + doc + "\n"
