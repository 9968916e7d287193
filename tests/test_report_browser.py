"""The HTML report (``lora-audit report``) is safe to open: hostile adapter files cannot put markup, script,
styles or requests into it, and the page still works.

Tiny valid LoRA files carry the payloads of tests/xss_payloads.py in every attacker-controlled place the
engine reads: training metadata values and key names, kohya tag frequencies (folder names and tags) and
dataset folders, ``modelspec.*``, a stray tensor name, the file name, and the model card and Civitai-style
sidecars beside the file. One report holds them all, with one more file that has a harmless marker in each
field, to show that every field is rendered (so no payload goes unexamined because its field is not shown).

* :func:`test_report_markup_is_inert` (no browser): the report file obeys the markup contract (allowlisted
  elements and attributes only, one inline script at the end of the body, one inline style, a CSP meta with
  their hashes first in the head, links only in-page or to license texts in the rules files, no raw control
  or bidi characters), every field is shown and every payload is displayed as escaped text, the 200 kB value
  cut with its marker.
* :func:`test_report_in_a_browser_runs_nothing_and_loads_nothing` (Chromium): the report's own script ran
  (``data-report-ready``), no payload ran (the title is unchanged), nothing was requested from the beacon
  server, and the DOM after scripts ran still obeys the contract.
* :func:`test_deny_banner_is_red_on_screen` (Chromium, Pillow): a denied FLUX.1 adapter is shown with the red
  deny banner near the top of a non-blank page.
* :func:`test_unreadable_files_report_is_inert` and :func:`test_unreadable_files_report_in_a_browser`: the
  same for files that cannot be read (exit 2, the grey error banner), whose error messages quote attacker text.
* :func:`test_harness_sees_execution_and_requests` (Chromium): the checks above can fail: a page that does run
  payloads is caught by the same title, request and markup checks.

Browser tests skip without Chromium, unless ``LORA_AUDIT_BROWSER_TESTS=required`` (CI), where they fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import unicodedata
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
import yaml
from audit.reports.safe import clean

from audit import corpus
from tests import xss_payloads
from tests.browser import (
    ENV_REQUIRED,
    RequestLog,
    browser_or_skip,
    browser_required,
    dump_dom,
    screenshot,
)

PROG = [sys.executable, "-c", "import cli; cli.main()"]
EXECUTED = xss_payloads.EXECUTED
N_FILES = 9
#: values longer than this stay out of JSON/YAML containers (sidecar text fields are capped at 1024 chars)
MAX_NESTED = 1000

# --------------------------------------------------------------------------------------------------------
# the markup contract

HTML_TAGS = frozenset("""
    html head body meta title style script
    main header footer nav section article aside div span p br hr wbr
    h1 h2 h3 h4 h5 h6 a abbr b i u em strong small sub sup mark s q cite dfn time data code pre kbd samp var
    ul ol li dl dt dd table caption colgroup col thead tbody tfoot tr th td
    details summary figure figcaption blockquote address label input select option optgroup output
    meter progress button
""".split())
SVG_TAGS = frozenset("svg g rect line polyline text title path circle".split())
#: attributes that load, navigate or submit (``href`` is checked on its own)
FORBIDDEN_ATTRS = frozenset("""
    src srcdoc srcset action formaction xlink:href poster background ping lowsrc dynsrc manifest codebase
    archive classid longdesc usemap style
""".split())
META_NAMES = frozenset({"viewport", "color-scheme", "generator", "referrer", "robots", "description"})
BANNER_COLOURS = {"deny": (0xCF, 0x22, 0x2E)}


def _unsafe_char(ch: str) -> bool:
    """What the report must never contain raw: the characters reports/safe.py escapes (bar tab, LF, CR)."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Cn")


def rules_urls() -> frozenset[str]:
    """Every https URL written in the project's rules files (the only external links a report may hold)."""
    urls: set[str] = set()
    root = resources.files("audit.rules")

    def walk(node) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child)
            elif child.name.endswith(".yaml"):
                for m in re.finditer(r"https://[^\s'\"<>`]+", child.read_text(encoding="utf-8")):
                    url = m.group(0)
                    urls.add(url)
                    urls.add(url.rstrip(".,;:)]}"))

    walk(root)
    assert urls, "no URL found in the rules files"
    return frozenset(urls)


class _Doc(HTMLParser):
    """Everything the checks need from one HTML document, in one pass."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]], tuple[str, ...]]] = []  # tag, attrs, ancestors
        self.stack: list[str] = []
        self.text: list[str] = []  # text nodes outside <script>/<style>
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.titles: list[tuple[str, bool]] = []  # (text, inside <svg>)
        self.comments: list[str] = []
        self.decls: list[str] = []  # <!...> other than the doctype, processing instructions
        self._raw: str | None = None  # "script" / "style" while inside one
        self._title: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, attrs, tuple(self.stack)))
        if tag in ("script", "style"):
            self._raw = tag
            (self.scripts if tag == "script" else self.styles).append("")
        if tag == "title":
            self._title = []
        if tag not in ("meta", "br", "hr", "wbr", "input", "col", "img", "link", "base", "embed", "source",
                       "area", "param", "track"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <rect ... />: no children
        self.elements.append((tag, attrs, tuple(self.stack)))

    def handle_endtag(self, tag):
        if tag == self._raw:
            self._raw = None
        if tag == "title" and self._title is not None:
            self.titles.append(("".join(self._title), "svg" in self.stack))
            self._title = None
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self._raw == "script":
            self.scripts[-1] += data
        elif self._raw == "style":
            self.styles[-1] += data
        else:
            self.text.append(data)
            if self._title is not None:
                self._title.append(data)

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_decl(self, decl):
        if decl.strip().lower() != "doctype html":
            self.decls.append("<!" + decl + ">")

    def unknown_decl(self, data):
        self.decls.append("<![" + data + "]>")

    def handle_pi(self, data):
        self.decls.append("<?" + data + ">")


def parse(html: str) -> _Doc:
    doc = _Doc()
    doc.feed(html)
    doc.close()
    return doc


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def contract_violations(html: str, *, dumped: bool = False) -> list[str]:
    """Every way ``html`` breaks the report's markup contract (empty when it obeys it).

    ``dumped``: ``html`` is Chromium's serialisation of the live DOM (the script may have added elements after
    itself, and the serialiser re-escapes text), so the file-only checks (script position, CSP hashes of the
    exact bytes) are left out.
    """
    bad: list[str] = []
    doc = parse(html)
    urls = rules_urls()
    inputs = selects = 0
    for tag, attrs, ancestors in doc.elements:
        where = f"<{tag}{''.join(f' {k}={v!r}' for k, v in attrs)}>"[:300]
        in_svg = "svg" in ancestors or tag == "svg"
        allowed = SVG_TAGS if in_svg else HTML_TAGS
        if tag not in allowed:
            bad.append(f"element not allowed{' in <svg>' if in_svg else ''}: {where}")
        names = [k for k, _ in attrs]
        if len(names) != len(set(names)):
            bad.append(f"duplicate attribute: {where}")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                bad.append(f"event-handler attribute {name}: {where}")
            elif name in FORBIDDEN_ATTRS:
                bad.append(f"attribute {name} not allowed: {where}")
            elif name == "href" and not (value.startswith("#") or value in urls):
                bad.append(f"href is neither an in-page anchor nor a license URL from the rules files: {where}")
            elif name.endswith(":href"):
                bad.append(f"namespaced href: {where}")
            elif name == "http-equiv" and value.lower() != "content-security-policy":
                bad.append(f"meta http-equiv other than the CSP: {where}")
            if any(_unsafe_char(c) for c in value) or any(_unsafe_char(c) for c in name):
                bad.append(f"raw control/bidi/invisible character in an attribute: {where!a}")
        a = dict(attrs)
        if tag == "meta" and not ("charset" in a or a.get("http-equiv", "").lower() == "content-security-policy"
                                  or a.get("name") in META_NAMES):
            bad.append(f"unexpected <meta>: {where}")
        if tag == "input":
            inputs += 1
            if a.get("type") != "search" or a.get("id") != "filter":
                bad.append(f"<input> other than type=search id=filter: {where}")
        if tag == "select":
            selects += 1
            if a.get("id") != "verdict-filter":
                bad.append(f"<select> other than id=verdict-filter: {where}")
        if tag == "script" and attrs:
            bad.append(f"<script> with attributes (it must be inline and plain): {where}")
    if inputs > 1 or selects > 1:
        bad.append(f"{inputs} <input> and {selects} <select> elements; at most one of each")

    tags = [t for t, _, _ in doc.elements]
    if tags.count("script") != 1:
        bad.append(f"{tags.count('script')} <script> elements; exactly one is allowed")
    if tags.count("style") != 1:
        bad.append(f"{tags.count('style')} <style> elements; exactly one is expected")
    html_el = next((a for t, a, _ in doc.elements if t == "html"), None)
    if html_el is None or dict(html_el).get("lang") != "en":
        bad.append(f'no <html lang="en">: {html_el}')

    head = [(t, dict(a)) for t, a, anc in doc.elements if anc[-1:] == ("head",)]
    if len(head) < 2 or "charset" not in head[0][1] or head[0][1]["charset"].lower() != "utf-8":
        bad.append(f"the first element in <head> is not <meta charset=utf-8>: {head[:1]}")
    csp = head[1][1] if len(head) > 1 and head[1][0] == "meta" else {}
    if csp.get("http-equiv", "").lower() != "content-security-policy":
        bad.append(f"the second element in <head> is not the CSP meta: {head[1:2]}")
    else:
        policy = csp.get("content", "")
        if not policy.startswith("default-src 'none'"):
            bad.append(f"CSP does not start with default-src 'none': {policy!r}")
        if not dumped and doc.scripts and doc.styles:
            for kind, body in (("script", doc.scripts[0]), ("style", doc.styles[0])):
                if _csp_hash(body) not in policy:
                    bad.append(f"CSP does not hold the sha256 of the inline {kind} ({_csp_hash(body)}): {policy!r}")
    style_at = next((i for i, (t, _, _) in enumerate(doc.elements) if t == "style"), None)
    csp_at = next((i for i, (t, a, _) in enumerate(doc.elements)
                   if t == "meta" and dict(a).get("http-equiv", "").lower() == "content-security-policy"), None)
    if style_at is not None and (csp_at is None or csp_at > style_at):
        bad.append("the CSP meta does not come before the <style>")

    if not dumped and "script" in tags:
        at = tags.index("script")
        script_anc = doc.elements[at][2]
        if script_anc[-1:] != ("body",):
            bad.append(f"the <script> is not a child of <body> (ancestors {script_anc})")
        if at != len(tags) - 1:
            bad.append(f"elements follow the <script>: {tags[at + 1:at + 6]}")

    head_titles = [t for t, in_svg in doc.titles if not in_svg]
    if len(head_titles) != 1 or not head_titles[0].startswith("lora-audit report"):
        bad.append(f"document title(s) {head_titles!r}; one, starting with 'lora-audit report', expected")
    for c in doc.comments:
        if "XSS" in c or "<" in c or "script" in c.lower():
            bad.append(f"comment that looks injected: <!--{c[:200]}-->")
    for d in doc.decls:
        bad.append(f"declaration or processing instruction: {d[:200]}")
    raw = sorted({f"U+{ord(c):04X}" for c in html if _unsafe_char(c)})
    if raw:
        bad.append(f"raw control, bidi or invisible characters in the document: {raw}")
    return bad


def visible_text(html: str) -> str:
    """The document's text nodes (not script or style), with unsafe characters escaped as safe.clean does."""
    return clean("".join(parse(html).text), None)


def missing_payloads(text: str, shown: dict[str, str]) -> list[str]:
    """Names of the payloads in ``shown`` whose escaped text appears nowhere in ``text``.

    A payload counts as shown when its escaped form (reports/safe.clean, no limit) appears whole, or when a
    prefix of at least 40 characters appears followed by the cut marker "…", or (a value the engine itself
    bounded) by at least 256 characters of it.
    """
    head_len = 40
    missing = []
    for name, payload in shown.items():
        needle = clean(payload, None)
        if needle in text:
            continue
        head = needle[:head_len]
        ok = False
        start = text.find(head)
        while start >= 0 and not ok:
            n = len(os.path.commonprefix([text[start:start + len(needle)], needle]))
            ok = n >= 256 or text[start + n:start + n + 1] == "…"
            start = text.find(head, start + 1)
        if not ok:
            missing.append(name)
    return missing


# --------------------------------------------------------------------------------------------------------
# hostile input files


def _yaml_safe(value: str) -> bool:
    try:
        return yaml.safe_load(yaml.safe_dump({"v": value}, allow_unicode=False, width=10**6)) == {"v": value}
    except yaml.YAMLError:
        return False


def _write_adapter(folder: Path, fname: str, meta: dict, stray: str, seed: int, card: dict, civitai: dict,
                   webui: dict, manager: dict) -> Path:
    """A tiny SD1.5 kohya LoRA ``folder/<fname>.safetensors`` with the metadata ``meta``, a tensor named ``stray``
    that no adapter format knows, and its four sidecars (model card, Civitai info, A1111 card, Lora-Manager)."""
    folder.mkdir()
    synth = corpus.build("sd1", "kohya", rank=2, targets="attn", text_encoders=False, max_modules=4, seed=seed,
                         metadata=meta)
    first = next(iter(synth.tensors))
    synth.tensors[stray] = synth.tensors[first]
    synth.dtypes[stray] = synth.dtypes[first]
    path = folder / f"{fname}.safetensors"
    corpus.write(path, synth)
    (folder / "README.md").write_text(
        "---\n" + yaml.safe_dump(card, allow_unicode=False, width=10**6, sort_keys=False) + "---\n# card\n",
        encoding="utf-8")
    (folder / f"{fname}.civitai.info").write_text(json.dumps(civitai), encoding="utf-8")
    (folder / f"{fname}.json").write_text(json.dumps(webui), encoding="utf-8")
    (folder / f"{fname}.metadata.json").write_text(json.dumps(manager), encoding="utf-8")
    return path


def build_hostile_files(root: Path, beacon: str) -> tuple[list[Path], dict[str, str]]:
    """N_FILES adapters, one per folder with its sidecars, that carry every payload in several fields.

    Returns the adapter paths and ``{name: text}`` of every payload as it must appear in the report (the
    file-name payloads lose their ``/`` and NUL, which a file name cannot hold).
    """
    items = xss_payloads.payloads(beacon)
    file_safe = dict(xss_payloads.for_file_names(beacon))
    shown = dict(items)
    paths = []
    for i in range(N_FILES):
        chunk = [p for _, p in items[i::N_FILES]]
        names = [n for n, _ in items[i::N_FILES]]
        short = [p for p in chunk if len(p) <= MAX_NESTED]
        text = [p for p in short if _yaml_safe(p)]

        def pick(k: int, pool=chunk, i=i) -> str:
            return pool[(k + i) % len(pool)]

        meta = {
            "ss_output_name": pick(0),
            # a value too long for any container goes here
            "ss_training_comment": next((p for p in chunk if len(p) > MAX_NESTED), pick(1)),
            "modelspec.title": pick(2),
            "modelspec.description": pick(3),
            "modelspec.license": pick(4),
            "modelspec.trigger_phrase": pick(5, short),
            "modelspec.author": pick(6),
            # folder names and tags; counts make the top tag a trigger word
            "ss_tag_frequency": json.dumps({
                **{f"{k + 1}_{p}": {p: 5, "tree": 1} for k, p in enumerate(short[::2])},
                "3_tags": {p: 9 - k for k, p in enumerate(short)},
            }),
            "ss_dataset_dirs": json.dumps({p: {"n_repeats": 2, "img_count": 5} for p in short[1::2]}),
        }
        for k, p in enumerate(short):  # key names: arbitrary keys, and modelspec.* keys the record keeps
            meta[p] = f"value-{k}"
            meta["modelspec." + p] = f"spec-{k}"
        card = {"license": pick(2, text), "license_name": pick(3, text), "license_link": pick(4, text),
                "base_model": [pick(5, text), "runwayml/stable-diffusion-v1-5"],
                "instance_prompt": pick(6, text), "tags": text}
        civitai = {"baseModel": pick(1, short), "trainedWords": [pick(2, short), pick(3, short)],
                   "model": {"name": pick(4, short), "allowCommercialUse": ["Image"]},
                   "files": [{"name": pick(5, short)[:100], "hashes": {"SHA256": pick(6, short)[:128]}}]}
        webui = {"description": pick(5, short), "sd version": pick(7, short), "activation text": pick(8, short),
                 "notes": pick(0, short)}
        manager = {"base_model": pick(1, short), "model_name": pick(2, short), "tags": short,
                   "sha256": pick(3, short)[:128], "civitai": civitai}
        in_name = next((n for n in names if n in file_safe), None)
        fname = file_safe[in_name] if in_name else f"file-{i}"
        if in_name:
            shown[f"file-name:{in_name}"] = fname
        paths.append(_write_adapter(root / f"t{i}", fname, meta, pick(7, short), i, card, civitai, webui,
                                    manager))
    return paths, shown


#: fields of the marker file whose value the engine reads and the report must show (see build_marker_file)
SHOWN_FIELDS = (
    "output_name", "training_comment", "title", "description", "author",  # training metadata
    "tag_folder", "tag", "dataset_folder",  # kohya tags and dataset folders
    "trigger_phrase", "card_instance_prompt", "civitai_trained_word", "webui_activation",  # trigger words
    "license", "card_license", "card_license_name", "card_license_link",  # license claims
    "card_base_model", "civitai_base_model", "webui_sd_version", "manager_base_model",  # base-model claims
    "metadata_key", "metadata_value", "modelspec_key", "tensor_name", "file_name",  # raw names and values
)


def _marker(field: str) -> str:
    return f"FIELD-{field.replace('_', '-')}-7c1e"


def build_marker_file(root: Path) -> Path:
    """One adapter with a distinct harmless marker in every field: the report must show each of SHOWN_FIELDS
    (so the payloads, spread over the same fields, cannot go unexamined because a field is not rendered)."""
    m = _marker
    meta = {
        "ss_output_name": m("output_name"), "ss_training_comment": m("training_comment"),
        "modelspec.title": m("title"), "modelspec.description": m("description"), "modelspec.author": m("author"),
        "modelspec.license": m("license"), "modelspec.trigger_phrase": m("trigger_phrase"),
        "ss_tag_frequency": json.dumps({"4_" + m("tag_folder"): {m("tag"): 3, "tree": 1}}),
        "ss_dataset_dirs": json.dumps({m("dataset_folder"): {"n_repeats": 1, "img_count": 2}}),
        m("metadata_key"): "x", "notes": m("metadata_value"), "modelspec." + m("modelspec_key"): "x",
    }
    card = {"license": m("card_license"), "license_name": m("card_license_name"),
            "license_link": m("card_license_link"), "base_model": m("card_base_model"),
            "instance_prompt": m("card_instance_prompt")}
    civitai = {"baseModel": m("civitai_base_model"), "trainedWords": [m("civitai_trained_word")]}
    webui = {"sd version": m("webui_sd_version"), "activation text": m("webui_activation")}
    manager = {"base_model": m("manager_base_model")}
    return _write_adapter(root / "markers", m("file_name"), meta, m("tensor_name"), 99, card, civitai, webui,
                          manager)


def run_report(paths, out: Path, *extra: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120", XDG_CACHE_HOME=str(home / "cache"), HOME=str(home))
    return subprocess.run([*PROG, "report", *map(str, paths), "-o", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=180, env=env, check=False)


def _report_fixture(root: Path, build, exits: tuple[int, ...]):
    """Files from ``build(folder, beacon)`` with a live RequestLog as beacon, one report over them; yields
    (report path, payloads expected as text, the log)."""
    with RequestLog() as log:
        (root / "in").mkdir()
        paths, shown = build(root / "in", beacon=log.url)
        out = root / "report.html"
        r = run_report(paths, out, "--jobs", "2", home=root)
        assert r.returncode in exits, f"exit {r.returncode}, expected {exits}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert out.is_file(), f"no report written\n{r.stderr[-3000:]}"
        assert log.requests == [], "building the report made requests"
        yield out, shown, log


def _hostile_and_marker_files(folder: Path, beacon: str):
    paths, shown = build_hostile_files(folder, beacon=beacon)
    paths.append(build_marker_file(folder))
    return paths, shown


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """One report over all the hostile files; the payloads point at a live RequestLog."""
    yield from _report_fixture(tmp_path_factory.mktemp("hostile"), _hostile_and_marker_files, (0, 1))


# --------------------------------------------------------------------------------------------------------
# the tests


def test_report_markup_is_inert(hostile_report):
    out, shown, _ = hostile_report
    html = out.read_text(encoding="utf-8")
    bad = contract_violations(html)
    assert not bad, "the report breaks its markup contract:\n" + "\n".join(bad[:60])
    text = visible_text(html)
    unshown = [f for f in SHOWN_FIELDS if _marker(f) not in text]
    assert not unshown, f"fields the report does not show: {unshown}"
    missing = missing_payloads(text, shown)
    assert not missing, f"payloads not shown as text (dropped or interpreted): {missing}"
    # the long value is cut, with its marker, and never shown whole
    long_head = clean(dict(xss_payloads.payloads(""))["long-200k"][:40], None)
    assert long_head in text
    assert "A" * 4097 not in text, "a 200 kB metadata value is shown uncut"
    assert re.search(re.escape(long_head) + r"A*… \(\+\d+ chars\)", text), \
        "the 200 kB value is not cut with the '… (+N chars)' marker"
    # template syntax stays literal
    for literal in ("{{7*7}}", "${7*7}", "#{7*7}", "{% raw %}"):
        assert literal in text


def test_report_in_a_browser_runs_nothing_and_loads_nothing(hostile_report):
    browser_or_skip()
    out, shown, log = hostile_report
    static_title = [t for t, in_svg in parse(out.read_text(encoding="utf-8")).titles if not in_svg]
    dom = dump_dom(out, budget_ms=3000)
    assert 'data-report-ready="1"' in dom, "the report's script did not run (no data-report-ready on <html>)"
    doc = parse(dom)
    titles = [t for t, in_svg in doc.titles if not in_svg]
    assert titles == static_title and EXECUTED not in titles[0], f"title changed: {titles!r}"
    assert log.requests == [], f"the report made requests: {log.requests}"
    bad = contract_violations(dom, dumped=True)
    assert not bad, "the live DOM breaks the markup contract:\n" + "\n".join(bad[:60])
    missing = missing_payloads(visible_text(dom), shown)
    assert not missing, f"payloads not shown as text in the live DOM: {missing}"


def build_unreadable_files(root: Path, beacon: str) -> tuple[list[Path], dict[str, str]]:
    """Files the engine cannot read, whose error messages quote attacker text: a payload as a dtype, as a
    tensor name with bad offsets, and in a truncated header; each file is named with a payload too."""
    items = dict(xss_payloads.payloads(beacon))
    names = dict(xss_payloads.for_file_names(beacon))

    def write(name: str, header: bytes, data: bytes = b"") -> Path:
        path = root / f"{name}.safetensors"
        path.write_bytes(len(header).to_bytes(8, "little") + header + data)
        return path

    # quote-free payloads: error messages quote with repr(), which would escape a ' inside
    key, dtype = items["img-src"], items["object-data"]
    paths = [
        write(names["svg-onload"], json.dumps({"t": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}).encode(),
              b"\0" * 4),
        write(names["attr-double-quote"], json.dumps({key: {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})
              .encode(), b"\0" * 4),
        write(names["bidi-rlo"], json.dumps({"__metadata__": {"k": items["script-plain"]}}).encode()[:-3]),
    ]
    shown = {f"file-name:{n}": names[n] for n in ("svg-onload", "attr-double-quote", "bidi-rlo")}
    shown["tensor-name:img-src"] = key
    return paths, shown


@pytest.fixture(scope="module")
def unreadable_report(tmp_path_factory):
    """Unreadable files (exit 2) whose error messages quote attacker text."""
    yield from _report_fixture(tmp_path_factory.mktemp("unreadable"), build_unreadable_files, (2,))


def test_unreadable_files_report_is_inert(unreadable_report):
    out, shown, _ = unreadable_report
    html = out.read_text(encoding="utf-8")
    bad = contract_violations(html)
    assert not bad, "the report of unreadable files breaks its markup contract:\n" + "\n".join(bad[:60])
    assert '<section class="banner verdict-error">' in html
    missing = missing_payloads(visible_text(html), shown)
    assert not missing, f"payloads not shown as text: {missing}"


def test_unreadable_files_report_in_a_browser(unreadable_report):
    browser_or_skip()
    out, _, log = unreadable_report
    dom = dump_dom(out, budget_ms=2000)
    assert 'data-report-ready="1"' in dom, "the report's script did not run"
    titles = [t for t, in_svg in parse(dom).titles if not in_svg]
    assert len(titles) == 1 and titles[0].startswith("lora-audit report"), titles
    assert log.requests == [], f"the report made requests: {log.requests}"
    bad = contract_violations(dom, dumped=True)
    assert not bad, "the live DOM breaks the markup contract:\n" + "\n".join(bad[:60])


def _deny_file(folder: Path) -> Path:
    """A FLUX.1 LoRA with no base claims: the tensors cannot tell [dev] (non-commercial) from [schnell]."""
    synth = corpus.build("flux1", "kohya", rank=2, targets="attn", text_encoders=False, max_modules=8)
    synth.metadata = {k: v for k, v in synth.metadata.items() if k.startswith("ss_network")}
    path = folder / "flux-style.safetensors"
    corpus.write(path, synth)
    return path


def test_deny_banner_is_red_on_screen(tmp_path):
    browser_or_skip()
    try:
        from PIL import Image, ImageStat
    except ImportError:  # Pillow is in the dev extras; CI must not skip for want of it
        if browser_required():
            pytest.fail(f"Pillow is not installed; {ENV_REQUIRED}=required, so this test may not be skipped")
        pytest.skip("Pillow is not installed")
    path = _deny_file(tmp_path)
    policy = "commercial-hosted-service"
    r = subprocess.run([*PROG, "license", str(path), "--json", "--policy", policy], capture_output=True,
                       text=True, timeout=120, check=False)
    verdicts = [p.get("verdict") for p in json.loads(r.stdout.splitlines()[0])["policies"]]
    assert verdicts == ["deny"], f"precondition: the file should be denied under {policy}: {verdicts}"
    out = tmp_path / "deny.html"
    r = run_report([path], out, "--policy", policy, home=tmp_path)
    assert r.returncode == 1, f"a deny verdict exits 1; got {r.returncode}\n{r.stderr[-2000:]}"
    html = out.read_text(encoding="utf-8")
    assert 'class="banner verdict-deny"' in html
    assert not contract_violations(html)

    png = screenshot(out, tmp_path / "deny.png", width=1280, height=1600)
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 1600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= 200, f"blank-looking page: {len(colours or [])} colours"
    std = max(ImageStat.Stat(img).stddev)
    assert std > 10, f"blank-looking page: pixel standard deviation {std:.1f}"
    top = img.crop((0, 0, 1280, 800))
    red = BANNER_COLOURS["deny"]
    near = sum(count for count, rgb in top.getcolors(maxcolors=1 << 20)
               if sum((a - b) ** 2 for a, b in zip(rgb, red)) <= 20 ** 2)
    assert near >= 2000, f"only {near} pixels of the deny red #cf222e in the top 800 px"


def test_harness_sees_execution_and_requests(tmp_path):
    """A deliberately unsafe page: the same checks must catch what ran, what loaded and the markup."""
    browser_or_skip()
    with RequestLog() as log:
        items = dict(xss_payloads.payloads(log.url))
        body = "".join(f"<div>{items[n]}</div>" for n in ("img-onerror", "img-src", "link-stylesheet",
                                                          "script-plain"))
        page = tmp_path / "unsafe.html"
        page.write_text(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lora-audit report'
                        f"</title><style>p{{}}</style></head><body>{body}<script>"
                        f"document.documentElement.setAttribute('data-report-ready','1')</script></body></html>",
                        encoding="utf-8")
        dom = dump_dom(page, budget_ms=2000)
        got = {p for _, p in log.requests}
    assert 'data-report-ready="1"' in dom
    assert [t for t, in_svg in parse(dom).titles if not in_svg] == [EXECUTED]
    assert {"/img-onerror", "/img-src", "/link-stylesheet"} <= got, got
    bad = "\n".join(contract_violations(page.read_text(encoding="utf-8")))
    for expected in ("element not allowed: <img", "event-handler attribute onerror", "attribute src not allowed",
                     "element not allowed: <link", "2 <script> elements", "not the CSP meta"):
        assert expected in bad, f"the markup check missed {expected!r}:\n{bad}"
    assert missing_payloads(visible_text(page.read_text(encoding="utf-8")), {"x": items["script-plain"]}) == ["x"]
