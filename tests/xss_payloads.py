"""Hostile strings for the HTML report tests (tests/test_report_browser.py); not collected as tests.

:func:`payloads` returns ``(name, payload)`` pairs. Every payload that could run or load anything does so
visibly: executed JavaScript sets ``document.title`` to :data:`EXECUTED` and/or requests ``<beacon>/<name>``,
and anything that loads a resource loads it from under ``beacon``. The rest (template syntax, entities,
control and bidi characters, a 200 kB value) must come out of the report as the same text, escaped, never
interpreted. No lone surrogates: safetensors metadata is strict UTF-8 JSON, so a file cannot carry one.
"""

from __future__ import annotations

#: what every executed payload sets ``document.title`` to
EXECUTED = "XSS-EXECUTED"
#: length of the long payload (characters)
LONG_CHARS = 200_000


def _js(beacon: str, name: str, q: str = "'") -> str:
    """JavaScript that marks the page as compromised: the title, and a request to the beacon."""
    return f"document.title={q}{EXECUTED}{q};fetch({q}{beacon}/{name}{q})"


def payloads(beacon: str) -> list[tuple[str, str]]:
    """``(name, payload)`` pairs; ``beacon`` is a URL without a trailing slash (``http://127.0.0.1:PORT``).

    Names are unique, short and safe as file-name parts. Payloads are unique, and no payload is a substring
    of another (so finding one in a report says which field showed it).
    """
    b = beacon.rstrip("/")

    def js(name: str, q: str = "'") -> str:
        return _js(b, name, q)

    items: list[tuple[str, str]] = [
        # --- <script> in every shape
        ("script-plain", f"<script>{js('script-plain')}</script>"),
        ("script-upper", f"<SCRIPT>{js('script-upper')}</SCRIPT>"),
        ("script-attrs", f'<script type="text/javascript" async defer nonce="x">{js("script-attrs")}</script>'),
        ("script-breakout", f"</script><script>{js('script-breakout')}</script><script>"),
        ("script-src", f'<script src="{b}/script-src.js"></script>'),
        ("script-nested", f"<scr<script>ipt>{js('script-nested')}</scr</script>ipt>"),
        ("script-module", f'<script type="module">import "{b}/script-module.js";</script>'),
        # --- event handlers
        ("img-onerror", f'<img src=x onerror="{js("img-onerror")}">'),
        ("img-src", f'<img src="{b}/img-src" alt="{EXECUTED}">'),
        ("img-srcset", f'<img srcset="{b}/img-srcset 1x" alt=x>'),
        ("svg-onload", f'<svg onload="{js("svg-onload")}">'),
        ("body-onload", f'<body onload="{js("body-onload")}">'),
        ("details-ontoggle", f'<details open ontoggle="{js("details-ontoggle")}"><summary>x</summary></details>'),
        ("input-onfocus", f'<input autofocus onfocus="{js("input-onfocus")}">'),
        ("marquee-onstart", f'<marquee onstart="{js("marquee-onstart")}">x</marquee>'),
        ("video-source-onerror", f'<video><source onerror="{js("video-source-onerror")}"></video>'),
        ("audio-src", f'<audio src="{b}/audio-src" autoplay></audio>'),
        ("attr-double-quote", f'"><img src=x onerror="{js("attr-double-quote")}">'),
        ("attr-single-quote", f"'><img src=x onerror='{js('attr-single-quote', q=chr(34))}'>"),
        ("attr-unquoted", f"x autofocus tabindex=1 onfocus={js('attr-unquoted')} x="),
        ("attr-style", f'" style="background:url({b}/attr-style)" x="'),
        ("attr-backtick", f"`><img src=x onerror=`{js('attr-backtick')}`>"),
        # --- javascript: and data: URLs
        ("a-javascript", f"<a href=\"javascript:{js('a-javascript')}\">{EXECUTED}</a>"),
        ("a-javascript-obfuscated", f"<a href=\"&#106;ava&#x09;script:{js('a-javascript-obfuscated')}\">x</a>"),
        ("bare-javascript-url", f"javascript:{js('bare-javascript-url')}//"),
        ("bare-https-url", f"https://evil.example/{EXECUTED}/bare-https-url"),
        ("bare-beacon-url", f"{b}/bare-beacon-url"),
        ("a-data-url", f"<a href=\"data:text/html,<script>{js('a-data-url')}</script>\">x</a>"),
        ("iframe-javascript", f"<iframe src=\"javascript:parent.{js('iframe-javascript')}\"></iframe>"),
        ("iframe-src", f'<iframe src="{b}/iframe-src"></iframe>'),
        ("form-action", (f'<form action="{b}/form-action"><button formaction="javascript:{js("form-action")}" '
                        f'autofocus>x</button><input type=submit></form>')),
        # --- SVG
        ("svg-script", f"<svg><script>{js('svg-script')}</script></svg>"),
        ("svg-script-href", f'<svg><script href="{b}/svg-script-href.js"></script></svg>'),
        ("svg-animate-onbegin", f'<svg><animate onbegin="{js("svg-animate-onbegin")}" attributeName=x dur=1s>'),
        ("svg-animate-href", (f"<svg><a><animate attributeName=href values=\"javascript:{js('svg-animate-href')}\"/>"
                             f"<text x=20 y=20>{EXECUTED}</text></a></svg>")),
        ("svg-use-data", (f"<svg><use href=\"data:image/svg+xml,<svg id='x' xmlns='http://www.w3.org/2000/svg'>"
                         f"<image href='{b}/svg-use-data' onerror='{js('svg-use-data-onerror')}'/></svg>#x\"/></svg>")),
        ("svg-a-xlink", f"<svg><a xlink:href=\"javascript:{js('svg-a-xlink')}\"><rect width=99 height=99 /></a></svg>"),
        ("svg-image", f'<svg><image href="{b}/svg-image" /></svg>'),
        ("svg-foreignobject", f"<svg><foreignObject><img src=x onerror=\"{js('svg-foreignobject')}\"></foreignObject></svg>"),
        # --- MathML
        ("mathml-mglyph", f"<math><mtext><table><mglyph><style><img src=x onerror=\"{js('mathml-mglyph')}\">"),
        ("mathml-maction", (f"<math><maction actiontype=statusline xlink:href=\"javascript:{js('mathml-maction')}\">"
                           f"CLICK<mtext>{EXECUTED}</mtext></maction></math>")),
        # --- CSS
        ("css-import-breakout", f"</style><style>@import url({b}/css-import-breakout);</style>"),
        ("css-rule", f"x{{background:url({b}/css-rule)}}"),
        ("css-rule-breakout", f"}}body{{background:url({b}/css-rule-breakout)}}/*"),
        ("style-element", f"<style>@import '{b}/style-element';body{{background:url({b}/style-element-bg)}}</style>"),
        ("svg-style", f"<svg><style>@import url({b}/svg-style);</style></svg>"),
        ("div-style-attr", f'<div style="background-image:url({b}/div-style-attr)">x</div>'),
        ("link-stylesheet", f"<link rel=stylesheet href={b}/link-stylesheet>"),
        ("link-preload", f'<link rel="preload" as="fetch" href="{b}/link-preload">'),
        # --- document-level elements
        ("meta-refresh", f'<meta http-equiv="refresh" content="0;url={b}/meta-refresh">'),
        ("base-href", f'<base href="{b}/base-href/">'),
        ("iframe-srcdoc", (f"<iframe srcdoc=\"&lt;img src=x onerror=&quot;parent.{js('iframe-srcdoc')}&quot;&gt;\">"
                          "</iframe>")),
        ("object-data", f'<object data="{b}/object-data"></object>'),
        ("embed-src", f'<embed src="{b}/embed-src">'),
        # --- breaking out of raw-text and special elements
        ("template-breakout", f"</template><img src=x onerror=\"{js('template-breakout')}\">"),
        ("noscript-breakout", f"<noscript><p title=\"</noscript><img src=x onerror={js('noscript-breakout')}>\">"),
        ("textarea-breakout", f"</textarea><script>{js('textarea-breakout')}</script>"),
        ("title-breakout", f"</title><script>{js('title-breakout')}</script>"),
        ("xmp-plaintext", f"</xmp><plaintext>{EXECUTED}-plaintext"),
        ("comment-open", f"<!-- {EXECUTED}-comment-open"),
        ("comment-close", f"--><script>{js('comment-close')}</script>"),
        ("comment-close-bang", f"--!><img src=x onerror=\"{js('comment-close-bang')}\">"),
        ("cdata", f"<![CDATA[><script>{js('cdata')}</script>]]>"),
        ("fullwidth-brackets", f"\uff1cscript\uff1e{js('fullwidth-brackets')}\uff1c/script\uff1e"),
        # --- template injection: must appear verbatim
        ("tpl-jinja-expr", "{{7*7}}"),
        ("tpl-jinja-raw", "{% raw %}{{ 6*6 }}{% endraw %}"),
        ("tpl-jinja-config", "{{ config.__class__.__init__.__globals__ }}"),
        ("tpl-dollar", "${7*7}"),
        ("tpl-hash", "#{7*7}"),
        ("tpl-erb", "<%= 7*7 %>"),
        # --- entities must be shown, not decoded once more
        ("entity-lt", f"&lt;script&gt;{js('entity-lt')}&lt;/script&gt;"),
        ("entity-numeric", f"&#60;img src=x onerror=&#34;{js('entity-numeric')}&#34;&#62;"),
        ("entity-amp", "&amp;lt;b&amp;gt;entity-amp&amp;lt;/b&amp;gt;"),
        # --- size and invisible characters
        ("long-200k", f"XSS-LONG-200K <b>start</b> {'A' * LONG_CHARS}<script>{js('long-200k')}</script>"),
        ("bidi-rlo", "XSS-BIDI \u202eexe.gnp\u202c tail"),
        ("bidi-isolates", ("XSS-ISOLATES \u2066lri\u2069 \u2067rli\u2069 \u2068fsi\u2069 \u202alre\u202c "
                          "\u202brle\u202c \u202dlro\u202c \u200elrm \u200frlm \u061calm")),
        ("zero-width", "XSS\u200bZERO\u200cWIDTH\u200d\u2060JOINER\ufeffBOM"),
        ("c0-controls", "XSS-C0 nul\x00 soh\x01 bel\x07 bs\x08 vt\x0b ff\x0c so\x0e us\x1f del\x7f end"),
        ("ansi-escape", ("XSS-ANSI \x1b[31mred\x1b[0m \x1b[2J\x1b[H \x1b]0;title\x07 \x1b]8;;https://evil.example\x1b\\"
                        "link\x1b]8;;\x1b\\ end")),
        ("c1-controls", "XSS-C1 nel\x85 dcs\x90 csi\x9b31m st\x9c osc\x9d apc\x9f end"),
        ("newlines", f"XSS-NEWLINES line1\r\nline2\u2028ls\u2029ps\n<script>{js('newlines')}</script>"),
    ]
    names = [n for n, _ in items]
    assert len(set(names)) == len(names), "payload names must be unique"
    return items


def for_file_names(beacon: str) -> list[tuple[str, str]]:
    """The payloads that are safe in a file name: no ``/`` and no NUL, at most 120 UTF-8 bytes."""
    out = []
    for name, p in payloads(beacon):
        p = p.replace("/", "").replace("\x00", "")
        if p and len(p.encode()) <= 120:
            out.append((name, p))
    return out
