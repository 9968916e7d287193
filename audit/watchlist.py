"""``--watchlist FILE``: names of artists or people to look for in an adapter's metadata and file name.

File syntax (UTF-8, a leading byte-order mark is allowed; at most 1 MiB and 20,000 lines)::

    # a comment line; blank lines are ignored
    Canonical Name | alias one | alias two    # a comment after whitespace

One entry per line: the canonical name, then any aliases, separated by ``|``. A ``#`` starts a comment at the
start of a line or after whitespace (so a ``#`` inside a name must not follow a space). Every name must keep at
least two letters or digits once normalised (below), be at most 200 characters, and belong to one entry only;
an entry has at most 64 spellings. A bad line raises :class:`WatchlistError` (a ``ValueError``) naming the line:
the file is the user's own input, so it is refused, not reported as a finding.

Normalisation (both sides): NFKC, case folding, accents removed (the generic combining-diacritic blocks:
U+0300-U+036F, U+0483-U+0489, U+1AB0-U+1AFF, U+1DC0-U+1DFF, U+20D0-U+20FF, U+FE20-U+FE2F; the marks of other
scripts, such as kana voicing or Indic vowel signs, are kept), then separators dropped: white space, ``_``,
every dash (``-``, en/em dashes...), ``.``, apostrophes (``'`` ``’`` ``‘`` ``ʼ`` `````) and middle dots
(``·`` ``・``). So ``Marguerite Vellacourt``, ``marguerite_vellacourt``, ``MARGUERITE-VELLACOURT``,
``Marguérite.Vellacourt`` and full-width ``ＭａｒｇｕｅｒｉｔｅＶｅｌｌａｃｏｕｒｔ`` are one name.

Matching rule: a name matches a value when its normalised form occurs in the value's normalised form AND the
occurrence starts and ends at a boundary of the original text. A boundary is the start or end of the text, or a
point between two characters where either is not a letter or digit (a space, ``_``, ``-``, ``,``, ``(``...),
where a lower-case letter is followed by an upper-case one (``byVellacourt``), where a letter meets a digit
(``vellacourt2``), or where either character belongs to a script written without spaces (Han, kana, Thai, Lao,
Khmer, Myanmar), in which every character boundary counts. A "character" here is a base character with the
combining marks after it (NFC first), so a match never starts or ends inside one character's expansion
(``ß`` folds to ``ss``). Pure substring search would flag ``Ann`` in ``annotation``; this rule does not, yet
finds ``Ann`` in ``ann_style``, ``AnnStyle`` and ``by ann, oil``. Values longer than 100,000 characters are
searched in their first 100,000.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from audit import findings as _findings
from audit.findings import Finding
from audit.record import Claims, WatchHit

__all__ = ["Entry", "Watchlist", "WatchlistError", "find_in", "load", "match", "normalise", "parse"]

MAX_BYTES = 1 << 20
MAX_LINES = 20_000
MAX_SPELLINGS = 64  # per entry, the canonical name included
MAX_NAME = 200  # characters per spelling
MIN_NORMALISED = 2
MAX_VALUE = 100_000  # characters of one searched value (longer values are searched in their first part)
MAX_TAGS = 200_000  # tags searched per file
MAX_HITS_PER_PLACE = 50  # WatchHits kept per (name, where); the finding counts them all
MAX_SHOWN = 300  # a WatchHit keeps a longer value as an excerpt around the match
EXCERPT = 100  # clusters kept on each side of the match in such an excerpt

#: Where a name can be found, in report order.
PLACES = ("tag", "trigger", "output_name", "dataset_folder", "file_name", "title", "comment")
_LABELS = {
    "tag": ("tag", "tags"),
    "trigger": ("trigger word", "trigger words"),
    "dataset_folder": ("dataset folder", "dataset folders"),
    "output_name": ("the output name", None),
    "file_name": ("the file name", None),
    "title": ("the modelspec title", None),
    "comment": ("the training comment", None),
}

_SEPARATORS = frozenset("_.'`\u2018\u2019\u02bc\u00b7\u30fb")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_COMMENT = re.compile(r"\s#")
# the generic combining-diacritic blocks (accents, and the marks "Zalgo" text piles up); the marks of other
# scripts (kana voicing, Indic vowel signs...) carry meaning and are kept
_DIACRITICS = (
    (0x0300, 0x036F),  # Combining Diacritical Marks
    (0x0483, 0x0489),  # Cyrillic combining titlo and enclosing marks
    (0x1AB0, 0x1AFF),  # Combining Diacritical Marks Extended
    (0x1DC0, 0x1DFF),  # Combining Diacritical Marks Supplement
    (0x20D0, 0x20FF),  # Combining Diacritical Marks for Symbols
    (0xFE20, 0xFE2F),  # Combining Half Marks
)
# scripts written without spaces between words: every character boundary is a word boundary
_NOSPACE = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


class WatchlistError(ValueError):
    """A watchlist file that cannot be used; the message names the file and, where it applies, the line."""

    def __init__(self, message: str, *, source: str = "watchlist", line: int | None = None):
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.line = line


@dataclass(frozen=True)
class Entry:
    name: str  # the canonical name, as written
    spellings: tuple[str, ...]  # the canonical name first, then the aliases (distinct once normalised)
    line: int


@dataclass(frozen=True)
class Watchlist:
    entries: tuple[Entry, ...]
    source: str = "watchlist"
    # normalised spelling -> (entry index, spelling index); the distinct lengths of the keys, ascending
    index: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)
    lengths: tuple[int, ...] = field(default=(), repr=False, compare=False)


# ---------------------------------------------------------------------------------------------------------
# normalisation and the boundary rule


@functools.lru_cache(maxsize=1 << 16)
def _joins(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it: a combining mark, also after NFKC (half-width ﾞ)."""
    folded = unicodedata.normalize("NFKC", ch)
    return unicodedata.category(ch)[0] == "M" or (bool(folded) and unicodedata.category(folded[0])[0] == "M")


def _clusters(text: str) -> list[str]:
    """NFC text cut into base characters, each with the combining marks that follow it."""
    t = unicodedata.normalize("NFC", text)
    starts = [i for i, ch in enumerate(t) if i == 0 or not _joins(ch)]
    return [t[a:b] for a, b in zip(starts, [*starts[1:], len(t)], strict=True)]


def _diacritic(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _DIACRITICS)


@functools.lru_cache(maxsize=1 << 16)
def _fold(cluster: str) -> str:
    """One cluster, normalised: NFKC, case-folded, generic diacritics dropped, separators dropped."""
    s = unicodedata.normalize("NFKD", cluster)
    s = "".join(c for c in s if not _diacritic(c))
    s = unicodedata.normalize("NFKC", s).casefold()
    return "".join(c for c in s if not (c.isspace() or c in _SEPARATORS or unicodedata.category(c) == "Pd"))


def normalise(text: str) -> str:
    """The normalised form that matching compares (see the module docstring)."""
    return "".join(_fold(c) for c in _clusters(text))


def _word(c: str) -> bool:
    return c.isalnum()


def _nospace(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _NOSPACE)


def _boundary(x: str, y: str) -> bool:
    """Whether there is a word boundary between adjacent base characters ``x`` and ``y``."""
    if not (_word(x) and _word(y)):
        return True
    if _nospace(x) or _nospace(y):
        return True
    if x.isdigit() != y.isdigit():
        return True
    return x.islower() and y.isupper()


def _scan(text: str) -> tuple[str, list[bool], list[bool], list[int], list[str]]:
    """Normalised text with, per normalised position, whether a match may start there and end just before it.

    Boundaries are decided between clusters (a base character and its combining marks), on their base
    characters, so a match never starts or ends inside one original character's expansion (``ß`` -> ``ss``).
    Also returns, per normalised position, the index of its cluster, and the clusters.
    """
    t = _clusters(text[:MAX_VALUE])
    pieces: list[str] = []
    start_ok: list[bool] = []
    end_ok: list[bool] = [False]  # indexed by the exclusive end 0..n
    origin: list[int] = []
    last = len(t) - 1
    for i, cluster in enumerate(t):
        f = _fold(cluster)
        if not f:
            continue
        before = i == 0 or _boundary(t[i - 1][0], cluster[0])
        after = i == last or _boundary(cluster[0], t[i + 1][0])
        k = len(f) - 1
        for j in range(len(f)):
            start_ok.append(before and j == 0)
            end_ok.append(after and j == k)
            origin.append(i)
        pieces.append(f)
    return "".join(pieces), start_ok, end_ok, origin, t


def _search(watchlist: Watchlist, text: str) -> tuple[dict[int, tuple[int, int, int]], list[str]]:
    """entry index -> (spelling index, first cluster, last cluster) of its leftmost match; and the clusters."""
    if not watchlist.index or not text:
        return {}, []
    norm, start_ok, end_ok, origin, clusters = _scan(text)
    n = len(norm)
    found: dict[int, tuple[int, int, int]] = {}
    for s in range(n):
        if not start_ok[s]:
            continue
        for length in watchlist.lengths:
            e = s + length
            if e > n:
                break
            if end_ok[e]:
                hit = watchlist.index.get(norm[s:e])
                if hit is not None and hit[0] not in found:
                    found[hit[0]] = (hit[1], origin[s], origin[e - 1])
    return found, clusters


def find_in(watchlist: Watchlist, text: str) -> list[tuple[int, int]]:
    """``(entry index, spelling index)`` of every entry found in ``text`` (leftmost spelling found per entry)."""
    found, _ = _search(watchlist, text)
    return sorted((entry, hit[0]) for entry, hit in found.items())


def _excerpt(clusters: list[str], first: int, last: int) -> str:
    """The text around a match, for a :class:`WatchHit` of a long value: at most ~EXCERPT characters each side."""
    lo = max(0, first - EXCERPT)
    hi = min(len(clusters), last + 1 + EXCERPT)
    return ("…" if lo else "") + "".join(clusters[lo:hi]) + ("…" if hi < len(clusters) else "")


# ---------------------------------------------------------------------------------------------------------
# the file


def parse(text: str, source: str = "watchlist") -> Watchlist:
    """Parse watchlist text; raise :class:`WatchlistError` with the line number of the first bad line."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        raise WatchlistError(f"{len(lines)} lines; the cap is {MAX_LINES}", source=source)
    entries: list[Entry] = []
    index: dict[str, tuple[int, int]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix("\r")
        bad = _CONTROL.search(line)
        if bad:
            raise WatchlistError(f"control character U+{ord(bad.group()):04X}", source=source, line=number)
        if line.lstrip().startswith("#"):
            continue
        comment = _COMMENT.search(line)
        if comment:
            line = line[: comment.start()]
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) > MAX_SPELLINGS:
            raise WatchlistError(f"{len(parts)} spellings; the cap is {MAX_SPELLINGS} per entry",
                                 source=source, line=number)
        spellings: list[str] = []
        keys: list[str] = []
        for k, part in enumerate(parts, 1):
            if not part:
                raise WatchlistError(f"spelling {k} is empty (stray '|'?)", source=source, line=number)
            if len(part) > MAX_NAME:
                raise WatchlistError(f"spelling {k} has {len(part)} characters; the cap is {MAX_NAME}",
                                     source=source, line=number)
            key = normalise(part)
            if len(key) < MIN_NORMALISED:
                raise WatchlistError(
                    f"'{part}' has fewer than {MIN_NORMALISED} letters or digits once normalised", source=source,
                    line=number)
            if key in keys:
                continue  # the same spelling twice in one entry
            other = index.get(key)
            if other is not None:
                prev = entries[other[0]]
                raise WatchlistError(
                    f"'{part}' is the same name as '{prev.spellings[other[1]]}' of '{prev.name}' on line "
                    f"{prev.line} (one spelling, one entry)", source=source, line=number)
            keys.append(key)
            spellings.append(part)
        for j, key in enumerate(keys):
            index[key] = (len(entries), j)
        entries.append(Entry(name=spellings[0], spellings=tuple(spellings), line=number))
    lengths = tuple(sorted({len(k) for k in index}))
    return Watchlist(entries=tuple(entries), source=source, index=index, lengths=lengths)


def load(path) -> Watchlist:
    """Read and parse a watchlist file (a regular file of at most 1 MiB, UTF-8)."""
    p = os.fsdecode(os.fspath(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise WatchlistError(f"cannot open ({exc.strerror or exc})", source=p) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WatchlistError("not a regular file", source=p)
        if st.st_size > MAX_BYTES:
            raise WatchlistError(f"{st.st_size} bytes; the cap is {MAX_BYTES}", source=p)
        chunks: list[bytes] = []
        got = 0
        while got <= MAX_BYTES:
            block = os.read(fd, MAX_BYTES + 1 - got)
            if not block:
                break
            chunks.append(block)
            got += len(block)
    except OSError as exc:
        raise WatchlistError(f"cannot read ({exc.strerror or exc})", source=p) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise WatchlistError(f"more than {MAX_BYTES} bytes", source=p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WatchlistError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})", source=p, line=line) from None
    return parse(text, source=p)


# ---------------------------------------------------------------------------------------------------------
# matching an audited file


def _places(claims: Claims | None, file_name: str, all_tags: Iterable[str],
            extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every (where, value) to search, deduplicated, in report order."""
    out: list[tuple[str, str]] = []
    if claims is not None:
        for folder in claims.datasets:
            out.extend(("tag", t.tag) for t in folder.top_tags)
    for n, tag in enumerate(all_tags):
        if n >= MAX_TAGS:
            break
        out.append(("tag", tag))
    if claims is not None:
        out.extend(("trigger", t.word) for t in claims.triggers)
        out.append(("output_name", claims.training.get("output_name")))
        out.extend(("dataset_folder", d.name) for d in claims.datasets)
    out.append(("file_name", file_name))
    if claims is not None:
        out.append(("title", claims.modelspec.get("title")))
        out.append(("comment", claims.training.get("training_comment")))
    out.extend(extra)
    seen: set[tuple[str, str]] = set()
    unique = []
    for where, value in out:
        if isinstance(value, str) and value and (where, value) not in seen:
            seen.add((where, value))
            unique.append((where, value))
    return unique


def match(watchlist: Watchlist, *, claims: Claims | None, file_name: str, all_tags: Iterable[str] = (),
          extra: Iterable[tuple[str, str]] = ()) -> tuple[list[WatchHit], list[Finding]]:
    """Search an audited file for the watchlist's names.

    Searched: the dataset tags (``claims.datasets[].top_tags`` and, when given, ``all_tags``: every tag of
    ``ss_tag_frequency``), trigger words, ``claims.training["output_name"]``, dataset folder names, ``file_name``,
    the modelspec title (``claims.modelspec["title"]``: audit/claims keeps modelspec keys without their prefix),
    the training comment (``claims.training["training_comment"]``), and any ``extra`` ``(where, value)`` pairs.
    Returns one :class:`WatchHit` per (name, where, value) -- at most 50 per name and place; a value longer
    than 300 characters is kept as an excerpt of ~100 characters each side of the match -- and one LA309
    finding per name found, saying where.
    """
    hits: list[WatchHit] = []
    counts: dict[int, dict[str, int]] = {}
    for where, value in _places(claims, file_name, all_tags, extra):
        found, clusters = _search(watchlist, value)
        for entry_index in sorted(found):
            spelling_index, first, last = found[entry_index]
            per = counts.setdefault(entry_index, {})
            per[where] = per.get(where, 0) + 1
            if per[where] <= MAX_HITS_PER_PLACE:
                entry = watchlist.entries[entry_index]
                shown = value if len(value) <= MAX_SHOWN else _excerpt(clusters, first, last)
                hits.append(WatchHit(name=entry.name, alias=entry.spellings[spelling_index], where=where,
                                     value=shown))
    order = {name: i for i, name in enumerate(PLACES)}
    rank = {e.name: i for i, e in enumerate(watchlist.entries)}
    hits.sort(key=lambda h: (rank[h.name], order.get(h.where, len(order))))  # stable: value order kept
    found: list[Finding] = []
    for entry_index in sorted(counts):
        entry = watchlist.entries[entry_index]
        per = counts[entry_index]
        parts = []
        for where in sorted(per, key=lambda w: order.get(w, len(order))):
            n = per[where]
            one, many = _LABELS.get(where, (where, where))
            parts.append(one if many is None else f"{n} {one if n == 1 else many}")
        found.append(_findings.make(
            "LA309", f"watchlist name '{entry.name}' (line {entry.line}) found in " + ", ".join(parts),
            entry.name))
    return hits, found
