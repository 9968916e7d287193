"""Make attacker-controlled text safe to show.

Tensor names, metadata values and file names come from the file. Before any of them reaches a terminal they
pass through :func:`clean`: control characters (C0, C1, DEL, so every ANSI escape sequence), bidi overrides,
invisible format characters and lone surrogates are replaced by visible escapes such as ``\\x1b`` or
``\\u202e``, and long values are cut with a marker. Renderers pass the result to rich as ``Text`` (never as
markup), so ``[bold]`` in a tag stays literal text.
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

DEFAULT_LIMIT = 160


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    cat = unicodedata.category(ch)
    # Cc: C0/C1 controls and DEL; Cf: bidi controls, zero-width and other invisible format characters;
    # Cs: lone surrogates (from undecodable file names); Zl/Zp: line and paragraph separators; Cn: unassigned
    # code points and noncharacters such as U+FFFE (no glyph, and XML 1.0 forbids some of them).
    return cat in ("Cc", "Cf", "Cs", "Zl", "Zp", "Cn")


def _escaped(s: str) -> str:
    if s.isprintable():  # every character clean() escapes is non-printable: the common case costs one C call
        return s
    return "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in s)


def clean(value: object, limit: int | None = DEFAULT_LIMIT, *, middle: bool = False) -> str:
    """A single-line, printable rendering of ``value`` with every unsafe character escaped.

    Over ``limit`` characters the value is cut with a marker: at the end, or in the middle when ``middle`` is
    set (for long layer names, whose end says which projection it is).
    """
    s = value if isinstance(value, str) else str(value)
    if limit is None or len(s) <= limit:
        return _escaped(s)
    if middle:
        head = limit // 2
        return f"{_escaped(s[:head])}…{_escaped(s[len(s) - (limit - head - 1):])}"
    return f"{_escaped(s[:limit])}… (+{len(s) - limit} chars)"


def text(value: object, style: str = "", limit: int | None = DEFAULT_LIMIT, *, middle: bool = False) -> Text:
    """rich Text that is never parsed as markup."""
    return Text(clean(value, limit, middle=middle), style=style)
