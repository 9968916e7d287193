"""Files beside an adapter, read as claims: PEFT/diffusers save folders, model cards and Civitai-style sidecars.

Everything here is hostile input. Each file is opened by name in the adapter's own folder with
``O_RDONLY|O_NOFOLLOW|O_NONBLOCK`` after an ``lstat``, re-checked with ``fstat`` (a regular file, the same
inode), read up to a byte cap, decoded as strict UTF-8 and parsed strictly: JSON through
:func:`audit.container.parse_nested_json` (no duplicate keys, no NaN/Infinity, a nesting cap checked before
parsing), YAML with the safe loader after an event pass that rejects aliases (no "billion laughs" expansion) and
caps nesting and size. A sidecar that fails any check gives one LA311 finding and is ignored; a readable sidecar
whose known field has the wrong type gives LA312 for that field. Nothing raises but a folder with no adapter.

Names and fields, as the tools that write them use them:

* ``README.md`` — a Hugging Face model card: YAML front matter between two ``---`` lines with ``base_model``
  (a string or a list), ``license``, ``tags``, ``instance_prompt``, ``widget`` (huggingface/diffusers
  ``src/diffusers/utils/hub_utils.py`` ``load_or_create_model_card``; the DreamBooth LoRA example scripts).
* ``<stem>.civitai.info`` — the Civitai model-version API object, as Stable-Diffusion-Webui-Civitai-Helper saves
  it (zixaphir/Stable-Diffusion-Webui-Civitai-Helper ``scripts/ch_lib/model.py``: ``f"{base}.civitai.info"``):
  ``baseModel``, ``trainedWords``, ``model.name``, ``files[].hashes`` (``SHA256``, ``AutoV1``, ``AutoV2``,
  ``AutoV3``, ``CRC32``, ``BLAKE3``).
* ``<stem>.json`` — the AUTOMATIC1111/Forge extra-networks card (AUTOMATIC1111/stable-diffusion-webui
  ``extensions-builtin/Lora/ui_edit_user_metadata.py``): ``description``, ``"sd version"`` (SD1, SD2, SDXL, SD3 or
  Unknown), ``"activation text"``, ``"preferred weight"``, ``"negative text"``, ``notes``.
* ``<stem>.metadata.json`` — ComfyUI-Lora-Manager (willmiao/ComfyUI-Lora-Manager ``py/utils/models.py``
  ``BaseModelMetadata``, ``py/utils/sidecar_paths.py``): ``base_model``, ``sha256`` (lower-case, of the whole
  file), ``model_name``, ``tags``, and ``civitai``: the same Civitai model-version object.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from audit import findings as _findings
from audit.container import Limits, _file_kind, parse_nested_json
from audit.errors import AuditError
from audit.findings import Finding
from audit.record import Claim, LicenseClaim

__all__ = [
    "ADAPTER_CONFIG",
    "DIFFUSERS_WEIGHTS",
    "PEFT_WEIGHTS",
    "Input",
    "Sidecars",
    "claims",
    "find",
    "hash_against",
    "hashes",
    "licenses",
    "resolve_input",
    "triggers",
]

PEFT_WEIGHTS = "adapter_model.safetensors"
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
README = "README.md"
#: the per-adapter sidecars read beside ``<stem>.safetensors``, and the slot each fills (see :func:`find`)
SIDECARS = ((".civitai.info", "civitai"), (".json", "webui"), (".metadata.json", "manager"))

#: Byte caps. A JSON sidecar must fit whole; a model card may be longer, but its front matter must close within
#: the first README_CAP bytes (the prose after it is never read).
CONFIG_CAP = 1 << 20
JSON_CAP = 4 << 20  # a Civitai model-version object lists every file and sample image of the version
README_CAP = 256 << 10
MAX_DEPTH = 64  # JSON/YAML nesting
MAX_YAML_EVENTS = 200_000
MAX_TEXT = 1024  # longest claim or trigger value kept (characters)
MAX_HASH = 128  # longest hash value kept (characters), as audit/hashes
MAX_ITEMS = 256  # at most this many entries read from one list field (trainedWords, files, base_model)

_BOM = b"\xef\xbb\xbf"
_HASH_KEYS = {"sha256": "sha256", "autov1": "autov1", "autov2": "autov2", "autov3": "autov3",
              "blake3": "blake3", "crc32": "crc32"}
_NO_CLAIM = frozenset({"", "unknown"})  # placeholders the writers use when they know nothing


@dataclass
class Input:
    """What ``inspect`` reads for one path: the adapter file and, for a PEFT save, its ``adapter_config.json``."""

    adapter_path: str
    adapter_config: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    read: list[str] = field(default_factory=list)  # file names read beside the adapter (adapter_config.json)


@dataclass
class Sidecars:
    """The sidecars found beside one adapter file, parsed; every value is attacker-controlled."""

    readme: dict[str, Any] | None = None  # README.md front matter (JSON-safe: str keys, dates as ISO text)
    civitai: dict[str, Any] | None = None  # <stem>.civitai.info: the Civitai model-version object
    webui: dict[str, Any] | None = None  # <stem>.json: the A1111/Forge extra-networks card
    manager: dict[str, Any] | None = None  # <stem>.metadata.json: the ComfyUI-Lora-Manager record
    read: list[str] = field(default_factory=list)  # file names that were read and used
    findings: list[Finding] = field(default_factory=list)


class _Unreadable(Exception):
    """A sidecar that cannot be used; the message says why (it becomes an LA311 finding)."""


# ---------------------------------------------------------------------------------------------------------
# bounded, no-follow reads


def _read(path: str, cap: int, *, whole: bool) -> tuple[bytes, bool] | None:
    """Read at most ``cap`` bytes of the regular file ``path``; None when there is no such file.

    Returns ``(data, truncated)``. With ``whole`` a file larger than ``cap`` is refused; without it the first
    ``cap`` bytes are returned and ``truncated`` says whether more followed. Raises :class:`_Unreadable`.
    """
    try:
        st0 = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _Unreadable(f"cannot be examined ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st0.st_mode):
        raise _Unreadable(f"is {_file_kind(st0.st_mode)}")
    if whole and st0.st_size > cap:
        raise _Unreadable(f"is {st0.st_size} bytes; the cap is {cap}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Unreadable("is a symbolic link (not followed)") from None
        raise _Unreadable(f"cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unreadable(f"is {_file_kind(st.st_mode)}")
        if (st.st_dev, st.st_ino) != (st0.st_dev, st0.st_ino):
            raise _Unreadable("was replaced while it was being opened")
        chunks: list[bytes] = []
        got = 0
        while got <= cap:
            try:
                block = os.read(fd, min(1 << 20, cap + 1 - got))
            except OSError as exc:
                raise _Unreadable(f"read failed ({exc.strerror or exc})") from None
            if not block:
                break
            chunks.append(block)
            got += len(block)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if got > cap:
        if whole:
            raise _Unreadable(f"grew beyond the cap of {cap} bytes while it was read")
        return data[:cap], True
    return data, False


def _decode(data: bytes) -> str:
    data = data.removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None


def _load_json(path: str, cap: int) -> dict[str, Any] | None:
    """A strict JSON object from ``path``; None when absent. Raises :class:`_Unreadable`."""
    got = _read(path, cap, whole=True)
    if got is None:
        return None
    text = _decode(got[0])
    try:
        obj = parse_nested_json(text, Limits(max_nested_json_depth=MAX_DEPTH, max_nested_json_bytes=cap))
    except AuditError as exc:
        reason = exc.message.removeprefix("nested JSON ")
        raise _Unreadable(f"is not strict JSON: {reason}") from None
    if not isinstance(obj, dict):
        raise _Unreadable(f"holds a JSON {type(obj).__name__}, not an object")
    return obj


# ---------------------------------------------------------------------------------------------------------
# YAML front matter


def _yaml():
    import yaml  # local: only needed when a model card is present

    return yaml


def _front_matter(data: bytes, truncated: bool) -> str | None:
    """The YAML text between a leading ``---`` line and the next ``---`` line; None when the card has none."""
    data = data.removeprefix(_BOM)
    lines = data.split(b"\n")
    if not lines or lines[0].rstrip() != b"---":
        return None
    for i in range(1, len(lines)):
        if lines[i].rstrip() == b"---" and (i < len(lines) - 1 or not truncated):
            return _decode(b"\n".join(lines[1:i]))
    if truncated:
        raise _Unreadable(f"front matter does not close within the first {len(data)} bytes")
    raise _Unreadable("front matter has no closing '---' line")


def _jsonable(obj: Any) -> Any:
    """The YAML safe loader's types as JSON data: mapping keys as text, dates as ISO text, bytes and sets named.

    Recursion is bounded by the nesting cap the event pass enforced.
    """
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return obj


def _load_yaml_mapping(text: str) -> dict[str, Any]:
    """Parse model-card front matter with the safe loader; refuse aliases, deep nesting and huge event streams."""
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = events = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            events += 1
            if events > MAX_YAML_EVENTS:
                raise _Unreadable(f"front matter has more than {MAX_YAML_EVENTS} YAML nodes")
            if isinstance(event, yaml.AliasEvent):
                raise _Unreadable("front matter uses YAML aliases (*name), which a model card has no need of")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Unreadable(f"front matter nests deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        obj = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _Unreadable(f"front matter is not valid safe YAML ({first[:160]})") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise _Unreadable(f"front matter is not valid safe YAML ({type(exc).__name__})") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _Unreadable(f"front matter is a YAML {type(obj).__name__}, not a mapping")
    return _jsonable(obj)


# ---------------------------------------------------------------------------------------------------------
# entry points


def resolve_input(path) -> Input:
    """The adapter file for a path given to ``inspect``.

    A directory is a PEFT or diffusers save: it must hold ``adapter_model.safetensors`` (PEFT; preferred when
    both exist) or ``pytorch_lora_weights.safetensors`` (diffusers), else :class:`AuditError` LA100. Its
    ``adapter_config.json``, when present, is parsed. A file is returned as it is; when it is named
    ``adapter_model.safetensors`` the ``adapter_config.json`` beside it is parsed too. A bad config gives LA311
    and ``adapter_config`` None. A symbolic link is not followed to a directory (the container refuses it).
    """
    p = os.fsdecode(os.fspath(path))
    try:
        is_dir = stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        is_dir = False  # missing or unreadable: the container reports it
    if is_dir:
        weights = None
        for name in (PEFT_WEIGHTS, DIFFUSERS_WEIGHTS):
            if os.path.lexists(os.path.join(p, name)):
                weights = os.path.join(p, name)
                break
        if weights is None:
            pickles = [n for n in ("adapter_model.bin", "pytorch_lora_weights.bin")
                       if os.path.lexists(os.path.join(p, n))]
            extra = f"; {pickles[0]} is a pickle and is never loaded" if pickles else ""
            raise AuditError(
                "LA100",
                f"directory holds neither {PEFT_WEIGHTS} (PEFT) nor {DIFFUSERS_WEIGHTS} (diffusers){extra}",
            )
        config_dir = p
    else:
        weights = p
        config_dir = os.path.dirname(p) if os.path.basename(p) == PEFT_WEIGHTS else None
    result = Input(adapter_path=weights)
    if config_dir is not None:
        try:
            config = _load_json(os.path.join(config_dir, ADAPTER_CONFIG), CONFIG_CAP)
        except _Unreadable as exc:
            result.findings.append(_findings.make("LA311", f"{ADAPTER_CONFIG} {exc}", ADAPTER_CONFIG))
        else:
            if config is not None:
                result.adapter_config = config
                result.read.append(ADAPTER_CONFIG)
    return result


def find(adapter_path) -> Sidecars:
    """Read the model card and Civitai-style sidecars beside ``adapter_path`` (see the module docstring).

    Missing files are simply absent. Each unusable one gives LA311 and is ignored; wrong-typed known fields
    give LA312 (once per field). ``read`` lists the names of the files that were used.
    """
    p = os.fsdecode(os.fspath(adapter_path))
    folder, base = os.path.split(p)
    stem = os.path.splitext(base)[0]
    sc = Sidecars()

    try:
        got = _read(os.path.join(folder, README), README_CAP, whole=False)
        text = _front_matter(*got) if got is not None else None
        if text is not None:
            sc.readme = _load_yaml_mapping(text)
            sc.read.append(README)
    except _Unreadable as exc:
        sc.findings.append(_findings.make("LA311", f"{README} {exc}", README))

    for suffix, slot in SIDECARS:
        name = stem + suffix
        if name in (base, ADAPTER_CONFIG):
            continue  # the adapter itself, or a PEFT config, is no card
        try:
            obj = _load_json(os.path.join(folder, name), JSON_CAP)
        except _Unreadable as exc:
            sc.findings.append(_findings.make("LA311", f"{name} {exc}", name))
            continue
        if obj is not None:
            setattr(sc, slot, obj)
            sc.read.append(name)

    sc.findings.extend(_extract(sc).problems)
    return sc


# ---------------------------------------------------------------------------------------------------------
# extraction of claims, triggers and hashes


@dataclass
class _Extracted:
    claims: list[Claim] = field(default_factory=list)
    triggers: list[tuple[str, str]] = field(default_factory=list)
    hashes: list[tuple[str, str]] = field(default_factory=list)
    licenses: list[LicenseClaim] = field(default_factory=list)
    permissions: dict[str, Any] | None = None
    problems: list[Finding] = field(default_factory=list)


class _Walker:
    """Typed access to one sidecar's fields; a wrong type gives one LA312 per field."""

    def __init__(self, label: str, out: _Extracted):
        self.label = label
        self.out = out
        self._seen: set[str] = set()

    def bad(self, key: str, what: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.out.problems.append(_findings.make("LA312", f"{self.label} field {key} {what}; ignored",
                                                    f"{self.label}:{key}"))

    def text(self, obj: dict, key: str, path: str | None = None, limit: int = MAX_TEXT) -> str | None:
        path = path or key
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(path, f"is {_type(value)}, not a string")
            return None
        if len(value) > limit:
            self.bad(path, f"is {len(value)} characters long (cap {limit})")
            return None
        return value

    def texts(self, obj: dict, key: str, path: str | None = None, *, single: bool = False) -> list[str]:
        """A list of strings (or, with ``single``, a string or a list of strings); wrong entries are dropped."""
        path = path or key
        value = obj.get(key)
        if value is None:
            return []
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.bad(path, f"is {_type(value)}, not a list of strings")
            return []
        if len(value) > MAX_ITEMS:
            self.bad(path, f"has {len(value)} entries; the first {MAX_ITEMS} are read")
            value = value[:MAX_ITEMS]
        out = []
        for v in value:
            if isinstance(v, str) and len(v) <= MAX_TEXT:
                out.append(v)
            else:
                self.bad(path + "[]", "holds an entry that is not a string of at most "
                                      f"{MAX_TEXT} characters")
        return out

    def mapping(self, obj: dict, key: str, path: str | None = None) -> dict | None:
        value = obj.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.bad(path or key, f"is {_type(value)}, not an object")
        return None


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a " + type(value).__name__


def _split_triggers(text: str) -> list[str]:
    """Trigger words from one string: split at commas and at Civitai-Helper's ``||`` prompt separator."""
    return [w.strip() for part in text.split("||") for w in part.split(",") if w.strip()]


def _civitai_object(w: _Extracted, walker: _Walker, obj: dict, prefix: str, source: str) -> None:
    """baseModel, trainedWords and files[].hashes of a Civitai model-version object."""
    base = walker.text(obj, "baseModel", prefix + "baseModel")
    if base is not None:
        w.claims.append(Claim(source=source, key=prefix + "baseModel", value=base))
    for holder, where in ((obj, prefix), (walker.mapping(obj, "model", prefix + "model"), prefix + "model.")):
        if holder and w.permissions is None:
            w.permissions = _permissions(walker, holder, where)
    for entry in walker.texts(obj, "trainedWords", prefix + "trainedWords"):
        for word in _split_triggers(entry):
            w.triggers.append((word, f"{walker.label}:{prefix}trainedWords"))
    files = obj.get("files")
    if files is None:
        return
    if not isinstance(files, list):
        walker.bad(prefix + "files", f"is {_type(files)}, not a list")
        return
    if len(files) > MAX_ITEMS:
        walker.bad(prefix + "files", f"has {len(files)} entries; the first {MAX_ITEMS} are read")
    for i, entry in enumerate(files[:MAX_ITEMS]):
        if not isinstance(entry, dict):
            walker.bad(prefix + "files[]", "holds an entry that is not an object")
            continue
        hashes_obj = walker.mapping(entry, "hashes", prefix + "files[].hashes")
        for key, value in (hashes_obj or {}).items():
            if key.lower() not in _HASH_KEYS:
                continue
            if isinstance(value, str) and len(value) <= MAX_HASH:
                w.hashes.append((f"{walker.label}:{prefix}files[{i}].hashes.{key}", value))
            else:
                walker.bad(prefix + "files[].hashes." + key, f"is not a string of at most {MAX_HASH} characters")


#: Civitai's commercial-use values (civitai/civitai prisma schema, enum CommercialUse) and what each allows
#: (PermissionIndicator.tsx wording): Image: sell generated images; RentCivit: run on Civitai's generator; Rent:
#: run on other paid generation services; Sell: sell the model or merges. The upload form adds Rent and RentCivit
#: when Sell is ticked, and RentCivit when Rent is; stored data may lack that, so the booleans apply it.
COMMERCIAL_USE = ("None", "Image", "RentCivit", "Rent", "Sell")
_PERMISSION_FLAGS = ("allowNoCredit", "allowDerivatives", "allowDifferentLicense")


def _permissions(walker: _Walker, obj: dict, prefix: str) -> dict[str, Any] | None:
    """Civitai permission flags of a model object, normalised; None when it carries none.

    ``allowCommercialUse`` is a list of strings in current API clients and a single string in older ones
    (``"None" | "Image" | "Rent" | "Sell"``); both are accepted. Unknown values are dropped with LA312.
    """
    if "allowCommercialUse" not in obj and not any(k in obj for k in _PERMISSION_FLAGS):
        return None
    out: dict[str, Any] = {}
    raw = obj.get("allowCommercialUse")
    values = walker.texts(obj, "allowCommercialUse", prefix + "allowCommercialUse", single=True) if raw is not None else None
    if values is not None:
        canon = {v.casefold(): v for v in COMMERCIAL_USE}
        kept = []
        for v in values:
            for part in v.split(","):
                c = canon.get(part.strip().casefold())
                if c is None:
                    walker.bad(prefix + "allowCommercialUse", f"holds an unknown value {part.strip()[:40]!r}")
                elif c not in kept:
                    kept.append(c)
        sell = "Sell" in kept
        rent = sell or "Rent" in kept
        out.update(allowCommercialUse=kept, sell_model=sell, paid_generation=rent,
                   civitai_generation=rent or "RentCivit" in kept, sell_images="Image" in kept)
    for key in _PERMISSION_FLAGS:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = value
        else:
            walker.bad(prefix + key, f"is {_type(value)}, not a boolean")
    return out or None


def _extract(sc: Sidecars) -> _Extracted:
    w = _Extracted()
    if sc.readme is not None:
        walker = _Walker(README, w)
        for value in walker.texts(sc.readme, "base_model", single=True):
            w.claims.append(Claim(source="readme", key="base_model", value=value))
        names = [(k, v) for k in ("license", "license_name", "license_link")
                 for v in walker.texts(sc.readme, k, single=True)]
        if any(k != "license" for k, _ in names):  # "license: other" only points at license_name / license_link
            names = [(k, v) for k, v in names if not (k == "license" and v.strip().casefold() == "other")]
        w.licenses += [LicenseClaim(source="readme", key=k, value=v) for k, v in names]
        prompt = walker.text(sc.readme, "instance_prompt")
        if prompt is not None and prompt.strip():
            w.triggers.append((prompt.strip(), f"{README}:instance_prompt"))
    if sc.civitai is not None:
        _civitai_object(w, _Walker(".civitai.info", w), sc.civitai, "", "sidecar")
    if sc.webui is not None:
        walker = _Walker(".json", w)
        version = walker.text(sc.webui, "sd version")
        if version is not None:
            w.claims.append(Claim(source="sidecar", key="sd version", value=version))
        activation = walker.text(sc.webui, "activation text")
        for word in _split_triggers(activation or ""):
            w.triggers.append((word, ".json:activation text"))
    if sc.manager is not None:
        walker = _Walker(".metadata.json", w)
        base = walker.text(sc.manager, "base_model")
        if base is not None:
            w.claims.append(Claim(source="sidecar", key="base_model", value=base))
        sha = walker.text(sc.manager, "sha256", limit=MAX_HASH)
        if sha is not None:
            w.hashes.append((".metadata.json:sha256", sha))
        civitai = walker.mapping(sc.manager, "civitai")
        if civitai:
            _civitai_object(w, walker, civitai, "civitai.", "sidecar")
    w.claims = _unique([c for c in w.claims if c.value.strip().casefold() not in _NO_CLAIM],
                       key=lambda c: (c.source, c.key, c.value))
    w.triggers = _unique(w.triggers, key=lambda t: t)
    w.hashes = _unique(w.hashes, key=lambda t: t)
    w.licenses = _unique(w.licenses, key=lambda c: (c.source, c.key, c.value))
    return w


def _unique(items: list, key) -> list:
    seen = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def claims(sc: Sidecars) -> list[Claim]:
    """Base-model claims: the card's ``base_model`` (source "readme"); ``baseModel`` of a Civitai object,
    ``"sd version"`` of an A1111 card and ``base_model`` of a Lora-Manager record (source "sidecar"; the
    Lora-Manager copy of the Civitai object gives key ``civitai.baseModel``). Empty values and the writers'
    ``Unknown`` placeholder are no claim. ``family``/``variant``/``verdict`` are left for audit/fingerprint.
    """
    return _extract(sc).claims


def triggers(sc: Sidecars) -> list[tuple[str, str]]:
    """``(word, source)`` pairs from ``trainedWords``, ``activation text`` and ``instance_prompt``.

    Civitai ``trainedWords`` entries and A1111 ``activation text`` are split at commas (and at ``||``, which
    Civitai Helper writes between whole prompts); ``instance_prompt`` is one trigger as written (stripped).
    ``source`` names the file kind and field, e.g. ``".civitai.info:trainedWords"``, ``"README.md:instance_prompt"``.
    """
    return _extract(sc).triggers


def hashes(sc: Sidecars) -> list[tuple[str, str]]:
    """``(field, value)`` for every file hash a sidecar states, as written (not compared here).

    Fields: ``.civitai.info:files[i].hashes.<Key>``, ``.metadata.json:civitai.files[i].hashes.<Key>`` for the
    Key names SHA256, AutoV1, AutoV2, AutoV3, BLAKE3 and CRC32 (any case), and ``.metadata.json:sha256``. A
    Civitai version lists every file it offers (fp16/fp32 variants, training data), so a check should call the
    file matched when ANY ``files[i]`` entry matches, and a mismatch only when none does.
    :func:`hash_against` names the computed hash a field is compared with.
    """
    return _extract(sc).hashes


def licenses(sc: Sidecars) -> tuple[list[LicenseClaim], dict[str, Any] | None]:
    """The adapter's own license statements beside it: the model card's ``license`` (``other`` only when no
    ``license_name``/``license_link`` follows), ``license_name`` and ``license_link``; and the Civitai permission
    flags of a Civitai object (``.civitai.info`` or the Lora-Manager copy; on the object or its ``model``), see
    :func:`_permissions`. Checked against the inherited license by audit/licensing.
    """
    w = _extract(sc)
    return w.licenses, w.permissions


_LAST = re.compile(r"[^.:]*\Z")


def hash_against(field_name: str) -> str | None:
    """The :class:`audit.record.Hashes` attribute a :func:`hashes` field states (``"sha256"``, ``"autov3"``...)."""
    m = _LAST.search(field_name)
    return _HASH_KEYS.get(m.group(0).lower()) if m else None
