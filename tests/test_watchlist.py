"""audit/watchlist: file syntax and its errors, normalisation, the boundary rule, and matching a file's claims."""

from __future__ import annotations

import os
import time
from importlib import resources

import pytest

from audit import watchlist as wl
from audit.record import Claims, DatasetFolder, TagCount, TriggerWord, WatchHit

# ---------------------------------------------------------------------------------------------------------
# syntax


def test_parse_entries_comments_blank_lines_bom_crlf():
    text = ("\ufeff# header comment\r\n\r\n"
            "Marguerite Vellacourt | m_vellacourt | vellacourt style   # painter\r\n"
            "   # indented comment\r\n"
            "Tobiah Quennell-Marsh\r\n"
            "Oskar Brennvald|brennvald art\t# tab before the comment\n")
    w = wl.parse(text, source="list.txt")
    assert [(e.name, e.spellings, e.line) for e in w.entries] == [
        ("Marguerite Vellacourt", ("Marguerite Vellacourt", "m_vellacourt", "vellacourt style"), 3),
        ("Tobiah Quennell-Marsh", ("Tobiah Quennell-Marsh",), 5),
        ("Oskar Brennvald", ("Oskar Brennvald", "brennvald art"), 6),
    ]
    assert w.source == "list.txt"


def test_hash_inside_a_name_is_kept():
    w = wl.parse("Artist#7 | a#7")
    assert w.entries[0].spellings == ("Artist#7", "a#7")


def test_same_spelling_twice_in_one_entry_is_folded():
    w = wl.parse("Isolde Farrowdene | isolde_farrowdene | ISOLDE-FARROWDENE | isolde_fd")
    assert w.entries[0].spellings == ("Isolde Farrowdene", "isolde_fd")


@pytest.mark.parametrize("text,line,words", [
    ("ok name\nAnn || b\n", 2, "spelling 2 is empty"),
    ("| alias\n", 1, "spelling 1 is empty"),
    ("# c\n\nName |\n", 3, "spelling 2 is empty"),
    ("ok name\nX\n", 2, "fewer than 2 letters or digits"),
    ("ok name\n--- | .. \n", 2, "fewer than 2"),
    ("Marguerite Vellacourt\nfoo | marguerite_vellacourt\n", 2, "'Marguerite Vellacourt' on line 1"),
    ("bell\x07name\n", 1, "control character U+0007"),
    ("a\u2028b\n", 1, "U+2028"),
    ("n" * (wl.MAX_NAME + 1) + "\n", 1, "characters; the cap is 200"),
    (" | ".join(f"alias{i}" for i in range(wl.MAX_SPELLINGS + 1)), 1, "spellings; the cap is 64"),
])
def test_syntax_errors_name_the_line(text, line, words):
    with pytest.raises(wl.WatchlistError) as ei:
        wl.parse(text, source="w.txt")
    assert ei.value.line == line
    assert str(ei.value).startswith(f"w.txt, line {line}: ") and words in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_too_many_lines():
    with pytest.raises(wl.WatchlistError, match="lines; the cap is"):
        wl.parse("\n" * wl.MAX_LINES)


def test_empty_watchlist_matches_nothing():
    w = wl.parse("# nothing yet\n\n")
    assert w.entries == () and wl.find_in(w, "anything") == []


def test_load_file(tmp_path):
    p = tmp_path / "w.txt"
    p.write_bytes("Yumeko Harukaze | 春風ゆめこ\n".encode())
    w = wl.load(p)
    assert w.entries[0].spellings == ("Yumeko Harukaze", "春風ゆめこ") and w.source == str(p)


def test_load_bad_utf8_names_the_line(tmp_path):
    p = tmp_path / "w.txt"
    p.write_bytes(b"good name\nsecond\nbad \xff name\n")
    with pytest.raises(wl.WatchlistError) as ei:
        wl.load(p)
    assert ei.value.line == 3 and "not valid UTF-8" in str(ei.value)


def test_load_refuses_fifo_directory_missing_and_huge(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(wl.WatchlistError, match="not a regular file"):
        wl.load(fifo)
    assert time.monotonic() - t0 < 5
    with pytest.raises(wl.WatchlistError, match="not a regular file|cannot"):
        wl.load(tmp_path)
    with pytest.raises(wl.WatchlistError, match="cannot open"):
        wl.load(tmp_path / "missing.txt")
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as fh:
        fh.truncate(wl.MAX_BYTES + 1)
    with pytest.raises(wl.WatchlistError, match="the cap is"):
        wl.load(huge)


def test_shipped_example_parses_and_each_entry_finds_itself():
    text = resources.files("audit").joinpath("examples/watchlist-example.txt").read_text(encoding="utf-8")
    w = wl.parse(text)
    assert len(w.entries) == 5
    for i, entry in enumerate(w.entries):
        for j, spelling in enumerate(entry.spellings):
            assert wl.find_in(w, spelling) == [(i, j)]


# ---------------------------------------------------------------------------------------------------------
# normalisation and the boundary rule


def test_normalise_by_hand():
    assert wl.normalise("Marguerite Vellacourt") == "margueritevellacourt"
    assert wl.normalise("O'Brennvald-Marsh_Jr.") == "obrennvaldmarshjr"
    assert wl.normalise("ＭＡＲＧＵＥＲＩＴＥ　Ｖｅｌｌａｃｏｕｒｔ") == "margueritevellacourt"  # full width, NFKC
    assert wl.normalise("Marguérite") == "marguerite"  # composed é
    assert wl.normalise("Margue\u0301rite") == "marguerite"  # e + combining acute
    assert wl.normalise("Straße") == "strasse"  # case folding
    assert wl.normalise("ﬁne") == "fine"  # ligature, NFKC
    assert wl.normalise("レオナルド・ダ・ヴィンチ") == "レオナルドダヴィンチ"  # katakana middle dot dropped
    assert wl.normalise("ｶﾞ") == "ガ"  # half-width kana with voiced mark, NFKC composes
    assert wl.normalise("がく") != wl.normalise("かく")  # the kana voicing mark is not an accent


VARIANTS = [
    "Marguerite Vellacourt", "marguerite vellacourt", "MARGUERITE VELLACOURT", "marguerite_vellacourt",
    "marguerite-vellacourt", "Marguerite.Vellacourt", "margueritevellacourt", "MargueriteVellacourt",
    "  marguerite   vellacourt ", "Marguérite Vellacourt", "ｍａｒｇｕｅｒｉｔｅ＿ｖｅｌｌａｃｏｕｒｔ",
    "marguerite\u2013vellacourt", "marguerite’vellacourt",
]


@pytest.mark.parametrize("value", VARIANTS)
def test_spelling_variants_match(value):
    w = wl.parse("Marguerite Vellacourt")
    assert wl.find_in(w, value) == [(0, 0)]
    assert wl.find_in(w, f"masterpiece, {value}, 1girl") == [(0, 0)]
    assert wl.find_in(w, f"by_{value}_style") == [(0, 0)]


@pytest.mark.parametrize("value,hit", [
    ("annotation", False), ("banner", False), ("joanna", False), ("hannah", False), ("Annex", False),
    ("ann", True), ("Ann", True), ("ann_style", True), ("by ann, oil", True), ("AnnStyle", True),
    ("portraitByAnn", True), ("ann2", True), ("v2ann", True), ("(ann:1.2)", True), ("ANN-style", True),
    ("a n n", True), ("a_nn", True),
])
def test_boundary_rule(value, hit):
    w = wl.parse("Ann | ann")
    assert bool(wl.find_in(w, value)) is hit


def test_multi_word_name_needs_boundaries_at_both_ends_only():
    w = wl.parse("vellacourt style")
    assert wl.find_in(w, "vellacourt_style_v2") == [(0, 0)]
    assert wl.find_in(w, "xvellacourt style") == []
    assert wl.find_in(w, "vellacourt stylex") == []
    assert wl.find_in(w, "vellacourtstyle") == [(0, 0)]


def test_expanded_character_cannot_be_split():
    # "ß" folds to "ss": a match may not start at its second "s"
    assert wl.find_in(wl.parse("se"), "ß e") == []
    assert wl.find_in(wl.parse("sse"), "ß e") == [(0, 0)]
    assert wl.find_in(wl.parse("strasse"), "Straße") == [(0, 0)]


def test_scripts_without_spaces_match_inside_text():
    w = wl.parse("春風ゆめこ")
    assert wl.find_in(w, "春風ゆめこ風のイラスト") == [(0, 0)]
    assert wl.find_in(w, "tag: 春風ゆめこ") == [(0, 0)]
    assert wl.find_in(w, "春風ゆめ") == []


def test_overlapping_candidates_are_all_tried():
    # the first "ann" in "annann ann" fails the boundary rule; the last one matches
    w = wl.parse("ann")
    assert wl.find_in(w, "annann ann") == [(0, 0)]
    assert wl.find_in(w, "annann") == []


def test_first_spelling_found_is_reported():
    w = wl.parse("Marguerite Vellacourt | m_vellacourt | vellacourt style")
    assert wl.find_in(w, "lora of vellacourt style by m vellacourt") == [(0, 2)]


# ---------------------------------------------------------------------------------------------------------
# match(): where names are searched


def _claims() -> Claims:
    return Claims(
        training={"output_name": "m_vellacourt_v3", "training_comment": "style of Isolde Farrowdene, 40 images"},
        modelspec={"title": "Harbour lights"},
        triggers=[TriggerWord("vlc style", ["ss_tag_frequency"]), TriggerWord("vellacourt style", ["modelspec"])],
        datasets=[
            DatasetFolder(name="10_marguerite vellacourt", top_tags=[TagCount("1girl", 40),
                                                                     TagCount("m_vellacourt", 38)]),
            DatasetFolder(name="5_misc", top_tags=[TagCount("annotation", 3)]),
        ],
    )


WATCH = "Marguerite Vellacourt | m_vellacourt | vellacourt style\nIsolde Farrowdene\nAnn\nOskar Brennvald\n"


def test_match_places_hits_and_findings():
    w = wl.parse(WATCH)
    hits, found = wl.match(w, claims=_claims(), file_name="vellacourtStyle.safetensors",
                           all_tags=["harbour", "Marguerite_Vellacourt", "m_vellacourt"])
    assert hits == [
        WatchHit("Marguerite Vellacourt", "m_vellacourt", "tag", "m_vellacourt"),
        WatchHit("Marguerite Vellacourt", "Marguerite Vellacourt", "tag", "Marguerite_Vellacourt"),
        WatchHit("Marguerite Vellacourt", "vellacourt style", "trigger", "vellacourt style"),
        WatchHit("Marguerite Vellacourt", "m_vellacourt", "output_name", "m_vellacourt_v3"),
        WatchHit("Marguerite Vellacourt", "Marguerite Vellacourt", "dataset_folder", "10_marguerite vellacourt"),
        WatchHit("Marguerite Vellacourt", "vellacourt style", "file_name", "vellacourtStyle.safetensors"),
        WatchHit("Isolde Farrowdene", "Isolde Farrowdene", "comment", "style of Isolde Farrowdene, 40 images"),
    ]
    assert [(f.code, f.severity, f.where) for f in found] == [
        ("LA309", "warning", "Marguerite Vellacourt"), ("LA309", "warning", "Isolde Farrowdene")]
    assert found[0].message == ("watchlist name 'Marguerite Vellacourt' (line 1) found in 2 tags, 1 trigger word, "
                                "the output name, 1 dataset folder, the file name")
    assert found[1].message == "watchlist name 'Isolde Farrowdene' (line 2) found in the training comment"


def test_match_without_claims_and_with_extra_places():
    w = wl.parse(WATCH)
    hits, found = wl.match(w, claims=None, file_name="harbour.safetensors",
                           extra=[("readme_tag", "oskar-brennvald"), ("readme_tag", "oskar-brennvald")])
    assert hits == [WatchHit("Oskar Brennvald", "Oskar Brennvald", "readme_tag", "oskar-brennvald")]
    assert found[0].message.endswith("found in 1 readme_tag")


def test_match_title_and_no_hit():
    w = wl.parse("Harbour Lights")
    hits, found = wl.match(w, claims=_claims(), file_name="x.safetensors")
    assert [(h.where, h.value) for h in hits] == [("title", "Harbour lights")]
    assert found[0].message.endswith("found in the modelspec title")
    assert wl.match(wl.parse("Nobody Here"), claims=_claims(), file_name="x.safetensors") == ([], [])


def test_hits_per_place_are_capped_but_counted():
    w = wl.parse("Ann")
    tags = [f"ann_{i}" for i in range(120)]
    hits, found = wl.match(w, claims=None, file_name="x.safetensors", all_tags=tags)
    assert len(hits) == wl.MAX_HITS_PER_PLACE and hits[0].value == "ann_0"
    assert "120 tags" in found[0].message


def test_non_text_values_are_skipped():
    w = wl.parse("Ann")
    c = Claims(training={"output_name": 5, "training_comment": None})
    hits, found = wl.match(w, claims=c, file_name="x.safetensors", all_tags=["ann", 7])
    assert hits == [WatchHit("Ann", "Ann", "tag", "ann")]
    assert [(f.code, f.message) for f in found] == [("LA309", "watchlist name 'Ann' (line 1) found in 1 tag")]


def test_large_watchlist_and_tag_set_stay_fast():
    names = "\n".join(f"Fictional Person {i:05d} | fperson_{i:05d}" for i in range(5000))
    w = wl.parse(names)
    tags = [f"tag_{i}, some words here" for i in range(20000)] + ["fperson_04999"]
    t0 = time.monotonic()
    hits, _ = wl.match(w, claims=None, file_name="x.safetensors", all_tags=tags)
    assert time.monotonic() - t0 < 20
    assert hits == [WatchHit("Fictional Person 04999", "fperson_04999", "tag", "fperson_04999")]


def test_long_value_is_kept_as_an_excerpt_around_the_match():
    w = wl.parse("Isolde Farrowdene")
    comment = "a" * 1000 + " trained on Isolde Farrowdene photos " + "b" * 1000
    hits, _ = wl.match(w, claims=Claims(training={"training_comment": comment}), file_name="x.safetensors")
    assert len(hits) == 1
    start = comment.index("Isolde")
    end = start + len("Isolde Farrowdene")
    assert hits[0].value == "…" + comment[start - wl.EXCERPT:end + wl.EXCERPT] + "…"


def test_zalgo_and_huge_values_stay_linear():
    w = wl.parse("Ann")
    t0 = time.monotonic()
    assert wl.find_in(w, "ann" + "\u0489" * 99_000) == [(0, 0)]  # one cluster of 99,000 combining marks
    assert wl.find_in(w, "ann " + "x" * 10_000_000) == [(0, 0)]  # searched in its first MAX_VALUE characters
    assert wl.find_in(w, "x" * wl.MAX_VALUE + " ann") == []
    assert time.monotonic() - t0 < 10


def test_indic_vowel_signs_are_kept():
    # कि (ka + vowel sign i) and के (ka + vowel sign e) are different syllables
    assert wl.normalise("\u0915\u093f") != wl.normalise("\u0915\u0947")
    assert wl.find_in(wl.parse("\u0915\u093f\u0930\u0923"), "\u0915\u0947\u0930\u0923") == []
