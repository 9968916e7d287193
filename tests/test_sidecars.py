"""audit/sidecars: PEFT/diffusers folders, model cards and Civitai-style sidecars, real-world-shaped and hostile."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
from conftest import real_fixtures_dir

from audit import sidecars
from audit.errors import AuditError
from audit.record import Claim

# ---------------------------------------------------------------------------------------------------------
# helpers and real-world-shaped sidecars (field names as the writing tools use them; see audit/sidecars.py)

SHA = hashlib.sha256(b"fictional adapter bytes").hexdigest().upper()
SHA_ZIP = hashlib.sha256(b"fictional dataset zip").hexdigest().upper()


def civitai_version() -> dict:
    """A Civitai model-version object as Civitai Helper saves it to <stem>.civitai.info."""
    return {
        "id": 4242, "modelId": 2121, "name": "v1.0", "baseModel": "SDXL 1.0", "baseModelType": "Standard",
        "trainedWords": ["vlc_style", "oil painting, thick brushstrokes"],
        "description": "<p>version notes</p>",
        "model": {"name": "Fictional Style", "type": "LORA", "nsfw": False, "poi": False, "tags": ["style"]},
        "files": [
            {"id": 1, "name": "fictional_style.safetensors", "sizeKB": 1.5, "type": "Model", "primary": True,
             "metadata": {"format": "SafeTensor", "fp": None, "size": None},
             "hashes": {"AutoV1": "0A1B2C3D", "AutoV2": SHA[:10], "SHA256": SHA, "CRC32": "85114A0D",
                        "BLAKE3": "AB" * 32, "AutoV3": "CD" * 32}},
            {"id": 2, "name": "fictional_style_dataset.zip", "type": "Training Data", "hashes": {"SHA256": SHA_ZIP}},
        ],
        "images": [{"url": "https://example.invalid/1.jpeg", "meta": {"prompt": "vlc_style, a harbour"}}],
        "downloadUrl": "https://example.invalid/api/download/models/4242",
        "extensions": {"sd_civitai_helper": {"version": "1.8.0"}},
    }


WEBUI_CARD = {
    "description": "A fictional style.", "sd version": "SDXL",
    "activation text": "vlc_style, harbour || vlc_style, night", "preferred weight": 0.8,
    "negative text": "", "notes": "",
}

DIFFUSERS_CARD = """---
tags:
- text-to-image
- diffusers
- lora
- template:sd-lora
widget:
- text: 'a photo of sks dog in a bucket'
  output:
    url: image_0.png
base_model: stabilityai/stable-diffusion-xl-base-1.0
instance_prompt: a photo of sks dog
license: openrail++
---

# SDXL LoRA DreamBooth - fictional/sks-dog

Prose that is never parsed: base_model: not-this-one
"""


@pytest.fixture
def adapter(tmp_path):
    p = tmp_path / "fictional_style.safetensors"
    p.write_bytes(b"not read by sidecars")
    return p


def put(folder, name: str, content) -> None:
    data = content if isinstance(content, bytes) else content.encode() if isinstance(content, str) else \
        json.dumps(content).encode()
    (folder / name).write_bytes(data)


def codes(findings) -> list[str]:
    return [f.code for f in findings]


# ---------------------------------------------------------------------------------------------------------
# resolve_input


def test_peft_directory_with_config(tmp_path):
    put(tmp_path, "adapter_model.safetensors", b"x")
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["to_q", "to_v"],
              "base_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0"}
    put(tmp_path, "adapter_config.json", config)
    got = sidecars.resolve_input(tmp_path)
    assert got.adapter_path == str(tmp_path / "adapter_model.safetensors")
    assert got.adapter_config == config
    assert got.read == ["adapter_config.json"] and got.findings == []


def test_peft_directory_without_config(tmp_path):
    put(tmp_path, "adapter_model.safetensors", b"x")
    got = sidecars.resolve_input(str(tmp_path))
    assert got.adapter_path.endswith("adapter_model.safetensors")
    assert got.adapter_config is None and got.findings == [] and got.read == []


def test_diffusers_directory_and_peft_preference(tmp_path):
    put(tmp_path, "pytorch_lora_weights.safetensors", b"x")
    assert sidecars.resolve_input(tmp_path).adapter_path.endswith("pytorch_lora_weights.safetensors")
    put(tmp_path, "adapter_model.safetensors", b"x")
    assert sidecars.resolve_input(tmp_path).adapter_path.endswith("adapter_model.safetensors")


def test_directory_without_adapter_is_la100(tmp_path):
    with pytest.raises(AuditError) as ei:
        sidecars.resolve_input(tmp_path)
    assert ei.value.code == "LA100"
    assert "adapter_model.safetensors" in ei.value.message and "pytorch_lora_weights.safetensors" in ei.value.message
    put(tmp_path, "adapter_model.bin", b"\x80\x02")
    with pytest.raises(AuditError) as ei:
        sidecars.resolve_input(tmp_path)
    assert ei.value.code == "LA100" and "adapter_model.bin is a pickle" in ei.value.message


def test_file_path_reads_config_only_beside_adapter_model(tmp_path):
    put(tmp_path, "adapter_config.json", {"peft_type": "LORA"})
    put(tmp_path, "other.safetensors", b"x")
    got = sidecars.resolve_input(tmp_path / "other.safetensors")
    assert got.adapter_path == str(tmp_path / "other.safetensors") and got.adapter_config is None
    put(tmp_path, "adapter_model.safetensors", b"x")
    got = sidecars.resolve_input(tmp_path / "adapter_model.safetensors")
    assert got.adapter_config == {"peft_type": "LORA"}


def test_missing_path_is_passed_through(tmp_path):
    got = sidecars.resolve_input(tmp_path / "nope.safetensors")
    assert got.adapter_path == str(tmp_path / "nope.safetensors") and got.findings == []


def test_real_diffusers_save_folder():
    """A real diffusers save (pytorch_lora_weights.safetensors) resolved from its folder, then opened."""
    src = real_fixtures_dir() / "catundchat-sd15.safetensors"
    if not src.exists():
        pytest.skip("real fixtures absent")
    from audit.container import open_safetensors

    manifest = json.loads((real_fixtures_dir() / "MANIFEST.json").read_text())
    want = next(f["sha256"] for f in manifest["files"] if f["file"] == src.name)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        dst = os.path.join(d, "pytorch_lora_weights.safetensors")
        shutil.copyfile(src, dst)
        got = sidecars.resolve_input(d)
        assert got.adapter_path == dst and got.adapter_config is None
        with open(got.adapter_path, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == want
        with open_safetensors(got.adapter_path) as f:
            assert len(f.tensors) == 256


# hostile adapter_config.json: each one LA311, config None, the adapter still resolved


def _deep(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


HOSTILE_JSON = [
    ("duplicate key", b'{"r": 8, "r": 64}', "duplicate key"),
    ("NaN", b'{"lora_alpha": NaN}', "NaN"),
    ("Infinity", b'{"lora_alpha": -Infinity}', "Infinity"),
    ("deep nesting", _deep(5000), "deeper than 64"),
    ("bad UTF-8", b'{"a": "\xff\xfe"}', "not valid UTF-8"),
    ("array root", b"[1, 2]", "not an object"),
    ("truncated", b'{"r": 8', "not strict JSON"),
    ("lone surrogate", b'{"a": "\\ud800"}', "surrogate"),
]


@pytest.mark.parametrize("label,data,words", HOSTILE_JSON, ids=[c[0] for c in HOSTILE_JSON])
def test_hostile_adapter_config(tmp_path, label, data, words):
    put(tmp_path, "adapter_model.safetensors", b"x")
    put(tmp_path, "adapter_config.json", data)
    got = sidecars.resolve_input(tmp_path)
    assert got.adapter_config is None and got.read == []
    assert codes(got.findings) == ["LA311"]
    assert words in got.findings[0].message and got.findings[0].where == "adapter_config.json"


def test_adapter_config_not_regular(tmp_path):
    put(tmp_path, "adapter_model.safetensors", b"x")
    cfg = tmp_path / "adapter_config.json"
    os.mkfifo(cfg)  # a reader that blocked here would hang the test
    t0 = time.monotonic()
    got = sidecars.resolve_input(tmp_path)
    assert time.monotonic() - t0 < 5
    assert codes(got.findings) == ["LA311"] and "FIFO" in got.findings[0].message
    cfg.unlink()
    put(tmp_path, "real_config.json", {"r": 8})
    cfg.symlink_to(tmp_path / "real_config.json")
    got = sidecars.resolve_input(tmp_path)
    assert got.adapter_config is None and "symlink" in got.findings[0].message
    cfg.unlink()
    cfg.mkdir()
    got = sidecars.resolve_input(tmp_path)
    assert got.adapter_config is None and "directory" in got.findings[0].message


def test_adapter_config_over_cap_is_not_read(tmp_path):
    put(tmp_path, "adapter_model.safetensors", b"x")
    with open(tmp_path / "adapter_config.json", "wb") as fh:
        fh.truncate(10 * 2**30)  # sparse: 10 GiB that must never be read
    got = sidecars.resolve_input(tmp_path)
    assert codes(got.findings) == ["LA311"] and f"the cap is {sidecars.CONFIG_CAP}" in got.findings[0].message


# ---------------------------------------------------------------------------------------------------------
# find: real-world-shaped sidecars


def test_civitai_info(adapter):
    put(adapter.parent, "fictional_style.civitai.info", civitai_version())
    sc = sidecars.find(adapter)
    assert sc.read == ["fictional_style.civitai.info"] and sc.findings == []
    assert sc.civitai["model"]["name"] == "Fictional Style"
    assert sidecars.claims(sc) == [Claim(source="sidecar", key="baseModel", value="SDXL 1.0")]
    assert sidecars.triggers(sc) == [
        ("vlc_style", ".civitai.info:trainedWords"),
        ("oil painting", ".civitai.info:trainedWords"),
        ("thick brushstrokes", ".civitai.info:trainedWords"),
    ]
    h = sidecars.hashes(sc)
    assert h == [
        (".civitai.info:files[0].hashes.AutoV1", "0A1B2C3D"),
        (".civitai.info:files[0].hashes.AutoV2", SHA[:10]),
        (".civitai.info:files[0].hashes.SHA256", SHA),
        (".civitai.info:files[0].hashes.CRC32", "85114A0D"),
        (".civitai.info:files[0].hashes.BLAKE3", "AB" * 32),
        (".civitai.info:files[0].hashes.AutoV3", "CD" * 32),
        (".civitai.info:files[1].hashes.SHA256", SHA_ZIP),
    ]
    assert [sidecars.hash_against(f) for f, _ in h] == [
        "autov1", "autov2", "sha256", "crc32", "blake3", "autov3", "sha256"]


def test_webui_card(adapter):
    put(adapter.parent, "fictional_style.json", WEBUI_CARD)
    sc = sidecars.find(adapter)
    assert sc.read == ["fictional_style.json"] and sc.webui["preferred weight"] == 0.8
    assert sidecars.claims(sc) == [Claim(source="sidecar", key="sd version", value="SDXL")]
    assert sidecars.triggers(sc) == [
        ("vlc_style", ".json:activation text"), ("harbour", ".json:activation text"),
        ("night", ".json:activation text"),
    ]
    assert sidecars.hashes(sc) == []


def test_webui_unknown_version_is_no_claim(adapter):
    put(adapter.parent, "fictional_style.json", {"sd version": "Unknown", "activation text": ""})
    sc = sidecars.find(adapter)
    assert sidecars.claims(sc) == [] and sidecars.triggers(sc) == [] and sc.findings == []


def test_lora_manager_record(adapter):
    record = {
        "file_name": "fictional_style", "model_name": "Fictional Style",
        "file_path": "/loras/fictional_style.safetensors",
        "size": 1536, "modified": 1700000000.0, "sha256": SHA.lower(), "base_model": "SDXL 1.0",
        "preview_url": "", "notes": "", "from_civitai": True, "tags": ["style"], "modelDescription": "",
        "civitai": civitai_version(), "usage_tips": "{}",
    }
    put(adapter.parent, "fictional_style.metadata.json", record)
    sc = sidecars.find(adapter)
    assert sc.read == ["fictional_style.metadata.json"] and sc.findings == []
    assert sidecars.claims(sc) == [
        Claim(source="sidecar", key="base_model", value="SDXL 1.0"),
        Claim(source="sidecar", key="civitai.baseModel", value="SDXL 1.0"),
    ]
    assert ("vlc_style", ".metadata.json:civitai.trainedWords") in sidecars.triggers(sc)
    h = sidecars.hashes(sc)
    assert h[0] == (".metadata.json:sha256", SHA.lower())
    assert (".metadata.json:civitai.files[0].hashes.SHA256", SHA) in h
    assert sidecars.hash_against(".metadata.json:sha256") == "sha256"


def test_diffusers_model_card(adapter):
    put(adapter.parent, "README.md", DIFFUSERS_CARD)
    sc = sidecars.find(adapter)
    assert sc.read == ["README.md"] and sc.findings == []
    assert sc.readme["license"] == "openrail++" and "lora" in sc.readme["tags"]
    assert sc.readme["widget"][0]["output"]["url"] == "image_0.png"
    assert sidecars.claims(sc) == [
        Claim(source="readme", key="base_model", value="stabilityai/stable-diffusion-xl-base-1.0")]
    assert sidecars.triggers(sc) == [("a photo of sks dog", "README.md:instance_prompt")]


def test_model_card_base_model_list_crlf_and_bom(adapter):
    card = "\ufeff---\r\nbase_model:\r\n- black-forest-labs/FLUX.1-dev\r\n- black-forest-labs/FLUX.1-schnell\r\n" \
           "base_model_relation: merge\r\nlicense: other\r\nlicense_name: flux-1-dev-non-commercial-license\r\n---\r\n"
    put(adapter.parent, "README.md", card)
    sc = sidecars.find(adapter)
    assert sc.findings == []
    assert [c.value for c in sidecars.claims(sc)] == [
        "black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"]
    assert sc.readme["license_name"] == "flux-1-dev-non-commercial-license"


def test_all_sidecars_together(adapter):
    put(adapter.parent, "README.md", DIFFUSERS_CARD)
    put(adapter.parent, "fictional_style.civitai.info", civitai_version())
    put(adapter.parent, "fictional_style.json", WEBUI_CARD)
    sc = sidecars.find(adapter)
    assert sc.read == ["README.md", "fictional_style.civitai.info", "fictional_style.json"]
    assert [(c.source, c.key) for c in sidecars.claims(sc)] == [
        ("readme", "base_model"), ("sidecar", "baseModel"), ("sidecar", "sd version")]


def test_card_without_front_matter_is_ignored_silently(adapter):
    put(adapter.parent, "README.md", "# Just prose\n\n---\nbase_model: x\n---\n")
    sc = sidecars.find(adapter)
    assert sc.readme is None and sc.read == [] and sc.findings == []


def test_long_card_reads_only_the_front_matter(adapter):
    with open(adapter.parent / "README.md", "wb") as fh:
        fh.write(b"---\nbase_model: runwayml/stable-diffusion-v1-5\n---\n")
        fh.truncate(50 * 2**20)  # 50 MiB of prose (NULs) after the front matter: never read
    sc = sidecars.find(adapter)
    assert sc.findings == [] and sidecars.claims(sc)[0].value == "runwayml/stable-diffusion-v1-5"


def test_empty_front_matter_is_an_empty_mapping(adapter):
    put(adapter.parent, "README.md", "---\n---\nprose\n")
    sc = sidecars.find(adapter)
    assert sc.readme == {} and sc.findings == [] and sidecars.claims(sc) == []


def test_yaml_types_become_json_data(adapter):
    put(adapter.parent, "README.md", "---\ndate: 2024-05-01\n1: one\nblob: !!binary aGVsbG8=\n"
                                     "s: !!set {a: null}\nbase_model: x\n---\n")
    sc = sidecars.find(adapter)
    assert sc.readme == {"date": "2024-05-01", "1": "one", "blob": "<5 bytes>", "s": ["a"], "base_model": "x"}
    json.dumps(sc.readme, allow_nan=False)


# ---------------------------------------------------------------------------------------------------------
# find: hostile sidecars (each LA311, ignored; the others are still read)


def test_yaml_python_tags_never_execute(adapter, tmp_path):
    canary = tmp_path / "canary"
    card = f'---\nbase_model: !!python/object/apply:os.system ["touch {canary}"]\n---\n'
    put(adapter.parent, "README.md", card)
    put(adapter.parent, "fictional_style.json", WEBUI_CARD)
    sc = sidecars.find(adapter)
    assert not canary.exists()
    assert codes(sc.findings) == ["LA311"] and "python/object" in sc.findings[0].message
    assert sc.readme is None and sc.read == ["fictional_style.json"]
    card = "---\nx: !!python/name:os.system\n---\n"
    put(adapter.parent, "README.md", card)
    assert codes(sidecars.find(adapter).findings) == ["LA311"]


def test_yaml_bomb_is_refused_quickly(adapter):
    lines = ["---", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(ord("b"), ord("j")):
        prev = chr(i - 1)
        lines.append(f"{chr(i)}: &{chr(i)} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines += ["base_model: x", "---", ""]
    put(adapter.parent, "README.md", "\n".join(lines))
    t0 = time.monotonic()
    sc = sidecars.find(adapter)
    assert time.monotonic() - t0 < 5
    assert codes(sc.findings) == ["LA311"] and "aliases" in sc.findings[0].message and sc.readme is None


def test_yaml_recursive_alias_and_deep_nesting(adapter):
    put(adapter.parent, "README.md", "---\na: &a [*a]\n---\n")
    assert codes(sidecars.find(adapter).findings) == ["LA311"]
    put(adapter.parent, "README.md", "---\nx: " + "[" * 5000 + "]" * 5000 + "\n---\n")
    sc = sidecars.find(adapter)
    assert codes(sc.findings) == ["LA311"] and "deeper than 64" in sc.findings[0].message


@pytest.mark.parametrize("card,words", [
    ("---\n- a\n- b\n---\n", "not a mapping"),
    ("---\nbase_model: x\n", "no closing"),
    ("---\nbase_model: [unclosed\n---\n", "not valid safe YAML"),
    ("---\nbase_model: \xff\n---\n".encode("latin-1"), "not valid UTF-8"),
    ("---\nx: 1\nx: 2\n---\n", None),  # YAML keeps the last duplicate: accepted, as PyYAML does
])
def test_bad_front_matter(adapter, card, words):
    put(adapter.parent, "README.md", card)
    sc = sidecars.find(adapter)
    if words is None:
        assert sc.findings == [] and sc.readme == {"x": 2}
    else:
        assert codes(sc.findings) == ["LA311"] and words in sc.findings[0].message and sc.readme is None


def test_front_matter_over_cap(adapter):
    put(adapter.parent, "README.md", "---\nnotes: '" + "x" * sidecars.README_CAP + "'\n---\n")
    sc = sidecars.find(adapter)
    assert codes(sc.findings) == ["LA311"] and "does not close within the first" in sc.findings[0].message


@pytest.mark.parametrize("label,data,words", HOSTILE_JSON, ids=[c[0] for c in HOSTILE_JSON])
def test_hostile_json_sidecars(adapter, label, data, words):
    put(adapter.parent, "fictional_style.civitai.info", data)
    put(adapter.parent, "fictional_style.json", WEBUI_CARD)  # still read
    sc = sidecars.find(adapter)
    assert codes(sc.findings) == ["LA311"] and words in sc.findings[0].message
    assert sc.findings[0].where == "fictional_style.civitai.info"
    assert sc.civitai is None and sc.read == ["fictional_style.json"]


def test_sidecar_fifo_symlink_directory_and_huge(adapter):
    folder = adapter.parent
    os.mkfifo(folder / "fictional_style.civitai.info")
    put(folder, "elsewhere.json", WEBUI_CARD)
    (folder / "fictional_style.json").symlink_to(folder / "elsewhere.json")
    (folder / "README.md").mkdir()
    with open(folder / "fictional_style.metadata.json", "wb") as fh:
        fh.truncate(sidecars.JSON_CAP + 1)
    t0 = time.monotonic()
    sc = sidecars.find(adapter)
    assert time.monotonic() - t0 < 5
    msgs = {f.where: f.message for f in sc.findings}
    assert codes(sc.findings) == ["LA311"] * 4
    assert "directory" in msgs["README.md"]
    assert "FIFO" in msgs["fictional_style.civitai.info"]
    assert "symlink" in msgs["fictional_style.json"]
    assert f"the cap is {sidecars.JSON_CAP}" in msgs["fictional_style.metadata.json"]
    assert sc.read == [] and sc.civitai is sc.webui is sc.manager is sc.readme is None


def test_readme_symlink_not_followed(adapter, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text(DIFFUSERS_CARD)
    (adapter.parent / "README.md").symlink_to(outside)
    sc = sidecars.find(adapter)
    assert codes(sc.findings) == ["LA311"] and sc.readme is None


def test_wrong_types_are_la312_once_per_field(adapter):
    info = civitai_version()
    info["baseModel"] = 15
    info["trainedWords"] = ["ok_word", 3, None, {"x": 1}]
    info["files"][0]["hashes"]["SHA256"] = 12345
    put(adapter.parent, "fictional_style.civitai.info", info)
    sc = sidecars.find(adapter)
    assert sorted((f.code, f.where) for f in sc.findings) == [
        ("LA312", ".civitai.info:baseModel"),
        ("LA312", ".civitai.info:files[].hashes.SHA256"),
        ("LA312", ".civitai.info:trainedWords[]"),
    ]
    assert sidecars.claims(sc) == []
    assert sidecars.triggers(sc) == [("ok_word", ".civitai.info:trainedWords")]
    assert (".civitai.info:files[0].hashes.SHA256", SHA) not in sidecars.hashes(sc)


def test_list_caps(adapter):
    put(adapter.parent, "fictional_style.civitai.info",
        {"trainedWords": [f"w{i}" for i in range(1000)], "baseModel": "x" * (sidecars.MAX_TEXT + 1)})
    sc = sidecars.find(adapter)
    assert len(sidecars.triggers(sc)) == sidecars.MAX_ITEMS
    assert sorted(f.where for f in sc.findings) == [".civitai.info:baseModel", ".civitai.info:trainedWords"]


def test_readme_base_model_wrong_type(adapter):
    put(adapter.parent, "README.md", "---\nbase_model: 1.5\ninstance_prompt: [a]\n---\n")
    sc = sidecars.find(adapter)
    assert sorted(f.where for f in sc.findings) == ["README.md:base_model", "README.md:instance_prompt"]
    assert sidecars.claims(sc) == [] and sidecars.triggers(sc) == []


def test_adapter_named_like_a_sidecar_is_not_read_as_one(tmp_path):
    put(tmp_path, "adapter_config.safetensors", b"x")
    put(tmp_path, "adapter_config.json", {"peft_type": "LORA"})
    sc = sidecars.find(tmp_path / "adapter_config.safetensors")
    assert sc.webui is None and sc.read == [] and sc.findings == []
