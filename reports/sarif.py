"""SARIF 2.1.0 output: every finding of every record as a result, for code-scanning dashboards.

Reads the records; computes nothing (the file's SHA-256 comes from ``record.hashes``). Output is deterministic:
records in path order, findings in record order, sorted keys. Attacker-controlled text never reaches the log
raw: every string is escaped with ``audit.reports.safe.clean`` (control, bidi and invisible characters and lone
surrogates become visible escapes), square brackets in message text are escaped as SARIF §3.11.6 requires for
text that is not an embedded link, and file paths become percent-encoded URIs.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from audit.reports.safe import clean

from audit.findings import Finding, catalogue
from audit.record import AuditRecord, PolicyVerdict, Reason

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
BASE_ID = "SRCROOT"
LEVEL = {"critical": "error", "error": "error", "warning": "warning", "info": "note"}
POLICY_CODES = ("LA400", "LA401", "LA402")
# the tool itself failed on the file (time, memory, crash); every other error is a verdict on the file
TOOL_FAILURES = ("LA126", "LA127", "LA128")
GROUPS = {"LA1": "container", "LA2": "weights", "LA3": "claims", "LA4": "license", "LA5": "probe"}
TEXT_LIMIT = 2000  # characters of one message or location name
_WORD = re.compile(r"[A-Za-z0-9]+")
_BRACKET = re.compile(r"([\[\]])")


def _s(value: Any, limit: int | None = TEXT_LIMIT) -> str:
    return clean(value, limit)


def _message(value: Any) -> dict[str, str]:
    """A plain-text message: escaped, with literal brackets escaped so no viewer reads an embedded link."""
    return {"text": _BRACKET.sub(r"\\\1", _s(value))}


def _rule_name(title: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in _WORD.findall(title))[:120] or "Finding"


def _encode(path: str) -> str:
    """Percent-encode a path (bytes as the OS sees them; '/' kept). The result is ASCII only."""
    path = path.replace(os.sep, "/") if os.sep != "/" else path
    try:
        raw = path.encode("utf-8", "surrogateescape")  # undecodable file names: the original bytes
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogatepass")
    return quote(raw, safe="/")


def _base_dir(base_uri: str | None) -> str | None:
    if base_uri is None:
        return None
    parts = urlsplit(base_uri)
    if parts.scheme == "file":
        return os.path.abspath(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ValueError(f"base_uri must be a directory or a file:// URI, not {parts.scheme}://")
    return os.path.abspath(base_uri)


def _file_uri(abs_path: str) -> str:
    return "file://" + ("" if abs_path.startswith("/") else "/") + _encode(abs_path)


def _artifact_location(path: str, base: str | None) -> dict[str, str]:
    if base is not None:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, base) if os.path.splitdrive(absolute)[0] == os.path.splitdrive(base)[0] \
            else os.pardir
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return {"uri": _encode(rel), "uriBaseId": BASE_ID}
        return {"uri": _file_uri(absolute)}
    if os.path.isabs(path):
        return {"uri": _file_uri(os.path.normpath(path))}
    return {"uri": _encode(posixpath.normpath(path.replace(os.sep, "/")))}


def _reason(r: Reason) -> dict[str, Any]:
    d = {"rule": r.rule, "action": r.action, "message": r.message, "remediation": r.remediation,
         "license": r.license, "clause": r.clause, "url": r.url, "lineage": r.lineage}
    return {k: _s(v) for k, v in d.items() if v is not None}


def _policy_properties(p: PolicyVerdict) -> dict[str, Any]:
    return {"policy": _s(p.policy), "name": _s(p.name), "verdict": _s(p.verdict),
            "reasons": [_reason(r) for r in p.reasons], "conditions": [_reason(r) for r in p.conditions],
            "notes": [_reason(r) for r in p.notes],
            "byLineage": {_s(k): _s(v) for k, v in p.by_lineage.items()}}


def _policy_for(f: Finding, record: AuditRecord) -> PolicyVerdict | None:
    if f.code not in POLICY_CODES or not f.where or not f.where.startswith("policy:"):
        return None
    wanted = f.where[len("policy:"):]
    return next((p for p in record.policies if p.policy == wanted), None)


def _findings(record: AuditRecord) -> list[Finding]:
    """The record's findings, plus its fatal error when the findings do not already hold it."""
    found = list(record.findings)
    if record.status == "error" and record.error is not None and record.error not in found:
        found.insert(0, record.error)
    return found


def _deep_clean(obj: Any) -> Any:
    """Escape every string (keys included) that could still hold a raw unsafe character; never truncates."""
    if isinstance(obj, str):
        return _s(obj, None)
    if isinstance(obj, dict):
        return {_s(str(k), None): _deep_clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_clean(v) for v in obj]
    return obj


def build(records: Sequence[AuditRecord], *, tool_version: str, base_uri: str | None = None,
          execution_successful: bool | None = None) -> dict[str, Any]:
    """The SARIF log as plain JSON data (see :func:`render`)."""
    base = _base_dir(base_uri)
    ordered = sorted(records, key=lambda r: r.file.path)
    per_record = [(r, _findings(r)) for r in ordered]
    codes = sorted({f.code for _, found in per_record for f in found})
    known = catalogue()
    rules, index = [], {}
    for i, code in enumerate(codes):
        entry = known.get(code)
        title = entry.title if entry else "finding code not in this version's catalogue"
        severity = entry.severity if entry else "warning"
        index[code] = i
        rules.append({"id": code, "name": _rule_name(title), "shortDescription": {"text": title},
                      "defaultConfiguration": {"level": LEVEL.get(severity, "warning")},
                      "properties": {"severity": severity, "tags": [GROUPS.get(code[:3], "other")]}})
    artifacts: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    tool_failed = False
    for record, found in per_record:
        location = _artifact_location(record.file.path, base)
        artifact: dict[str, Any] = {"location": dict(location), "length": int(record.file.size)}
        sha256 = record.hashes.sha256.lower() if record.hashes and record.hashes.sha256 else None
        if sha256:
            artifact["hashes"] = {"sha-256": sha256}
        art_index = len(artifacts)
        artifacts.append(artifact)
        physical = {"artifactLocation": {**location, "index": art_index}}
        for f in found:
            result: dict[str, Any] = {
                "ruleId": f.code, "ruleIndex": index[f.code], "level": LEVEL.get(f.severity, "warning"),
                "message": _message(f.message), "locations": [{"physicalLocation": physical}],
                "properties": {"severity": f.severity},
            }
            if f.where:
                result["locations"][0]["logicalLocations"] = [{"fullyQualifiedName": _s(f.where)}]
            if sha256:
                result["partialFingerprints"] = {"fileSha256/v1": sha256}
            policy = _policy_for(f, record)
            if policy is not None:
                result["properties"].update(_policy_properties(policy))
            results.append(result)
        if record.status == "error":
            e = record.error
            code = e.code if e is not None else None
            tool_failed = tool_failed or code in TOOL_FAILURES
            note: dict[str, Any] = {
                "level": "error" if code in TOOL_FAILURES or code is None else "warning",
                "message": _message(f"{code or 'error'}: {e.message if e else 'the file could not be analysed'}"),
                "locations": [{"physicalLocation": physical}],
            }
            if code is not None:
                note["associatedRule"] = {"id": code, "index": index[code]}
            notifications.append(note)
    invocation: dict[str, Any] = {
        "executionSuccessful": (not tool_failed) if execution_successful is None else bool(execution_successful),
    }
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "lora-audit", "semanticVersion": tool_version, "version": tool_version,
                            "rules": rules}},
        "invocations": [invocation],
        "artifacts": artifacts,
        "results": results,
    }
    if base is not None:
        root = _file_uri(base)
        run["originalUriBaseIds"] = {BASE_ID: {"uri": root if root.endswith("/") else root + "/"}}
    return _deep_clean({"$schema": SCHEMA, "version": "2.1.0", "runs": [run]})


def render(records: Sequence[AuditRecord], *, tool_version: str, base_uri: str | None = None,
           execution_successful: bool | None = None, indent: int | None = 2) -> str:
    """SARIF 2.1.0 JSON for ``records`` (one run).

    ``base_uri``: a directory (or ``file://`` URI); files under it get relative URIs with ``uriBaseId``
    ``SRCROOT`` (what code-scanning services expect, e.g. the repository checkout), others absolute ``file://``
    URIs. Without it, relative paths stay relative. ``execution_successful`` overrides
    ``invocations[0].executionSuccessful``, which is otherwise false only when a worker failed on a file
    (LA126/LA127/LA128): an unreadable or hostile file is a result, not a failure of the tool.
    ``indent=None`` writes compact JSON (about twice as fast for large scans).
    """
    log = build(records, tool_version=tool_version, base_uri=base_uri, execution_successful=execution_successful)
    return json.dumps(log, sort_keys=True, indent=indent, ensure_ascii=True, allow_nan=False)
