"""Attacker-controlled strings are escaped before they reach a terminal."""

import io

from rich.console import Console

from audit.reports.safe import clean, text


def test_controls_and_bidi_are_escaped():
    s = "a\x1b[2J\x1b[31mPWNED\x07\x00b\u202etxt.exe\u200b\x9b"
    out = clean(s)
    assert "\x1b" not in out and "\x07" not in out and "\x00" not in out and "\u202e" not in out
    assert "\u200b" not in out and "\x9b" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out and "\\x9b" in out


def test_lone_surrogate_and_newlines():
    out = clean("bad\udcffname\nline\u2028sep")
    assert "\\udcff" in out and "\\x0a" in out and "\\u2028" in out
    out.encode("utf-8")  # never raises


def test_truncation_marker():
    out = clean("x" * 500, limit=10)
    assert out.startswith("x" * 10) and "+490 chars" in out


def test_rich_markup_stays_literal():
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor").print(text("[bold red]hi[/] [link=http://x]y[/link]"))
    rendered = buf.getvalue()
    assert "[bold red]hi[/]" in rendered and "[link=http://x]" in rendered


def test_middle_truncation_keeps_both_ends():
    out = clean("unet:down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", limit=30, middle=True)
    assert out.startswith("unet:down_block") and out.endswith("attn2_to_k") and "…" in out
    assert len(out) == 30
