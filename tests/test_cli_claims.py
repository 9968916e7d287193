"""`lora-audit inspect` end to end for the fingerprint, claims, sidecars, hashes and the watchlist."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest

from audit import corpus
from tests.test_cli import run


def _flux(tmp_path, name="flux.safetensors", **meta):
    # a FLUX.1 kohya LoRA over every linear layer: 942 keys, as a trainer writes it (no guidance_in trained
    # unless the corpus plants it; the corpus metadata is replaced by ours)
    synth = corpus.build("flux1", "kohya", rank=2, targets="all-linear", text_encoders=False, metadata=meta)
    path = tmp_path / name
    corpus.write(path, synth)
    return path


def _json(r):
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_flux_keys_with_sd15_metadata_is_a_contradiction(tmp_path):
    path = _flux(tmp_path, ss_base_model_version="sd_1.5")
    r = run("inspect", str(path), "--json")
    rec = _json(r)
    assert r.returncode == 1  # LA300 is an error: the default --fail-on error fails the run
    fp = rec["fingerprint"]
    assert fp["family"] == "flux1" and fp["confidence"] == "high"
    la300 = [f for f in rec["findings"] if f["code"] == "LA300"]
    assert len(la300) == 1 and la300[0]["where"] == "metadata:ss_base_model_version"
    claim = next(c for c in rec["claims"]["base_claims"] if c["key"] == "ss_base_model_version")
    assert (claim["family"], claim["verdict"]) == ("sd1", "contradicts")
    # the same tensors with a truthful claim: no contradiction
    path = _flux(tmp_path, "flux-ok.safetensors", ss_base_model_version="flux1")
    rec = _json(run("inspect", str(path), "--json"))
    assert not [f for f in rec["findings"] if f["code"] in ("LA300", "LA301", "LA302")]


def test_flux_dev_schnell_ambiguity_is_candidates_with_reasons(tmp_path):
    path = _flux(tmp_path, **{"modelspec.architecture": "flux-1-dev/lora"})
    rec = _json(run("inspect", str(path), "--json"))
    cands = {c["id"]: c for c in rec["fingerprint"]["candidates"]}
    assert rec["fingerprint"]["family"] == "flux1"
    if any(layer["module"].startswith("guidance_in") for layer in rec["layers"]):
        assert "flux1-schnell" not in cands  # a trained guidance_in rules schnell out, and says so
    else:
        assert {"flux1-dev", "flux1-schnell"} <= set(cands)
    assert list(cands)[0] == "flux1-dev"  # the claimed variant first; still a candidate, not a verdict
    assert all(c["supports"] for c in cands.values())
    assert "LA304" in [f["code"] for f in rec["findings"]]


def test_hashes_in_the_record_match_hashlib(tmp_path):
    path = _flux(tmp_path)
    rec = _json(run("inspect", str(path), "--json"))
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    h = rec["hashes"]
    assert h["sha256"] == hashlib.sha256(data).hexdigest().upper()
    assert h["autov2"] == h["sha256"][:10]
    assert h["autov3"] == hashlib.sha256(data[8 + n:]).hexdigest().upper()
    assert h["autov1"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest().upper()[:8]
    rec = _json(run("inspect", str(path), "--json", "--no-hashes"))
    assert rec["hashes"] is None


def test_watchlist_hits_and_bad_watchlist(tmp_path):
    path = _flux(tmp_path, "mv_style.safetensors", ss_output_name="vellacourt_style",
                 ss_tag_frequency=json.dumps({"5_mv": {"mv": 5, "by marguerite vellacourt": 4, "tree": 1}}))
    example = resources.files("audit").joinpath("examples", "watchlist-example.txt")
    with resources.as_file(example) as wl:
        rec = _json(run("inspect", str(path), "--json", "--watchlist", str(wl)))
    hits = rec["claims"]["watchlist"]
    assert {(h["name"], h["where"]) for h in hits} >= {("Marguerite Vellacourt", "tag"),
                                                       ("Marguerite Vellacourt", "output_name")}
    assert [f["code"] for f in rec["findings"]].count("LA309") == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("Good Name\n | only an alias\n")
    r = run("inspect", str(path), "--watchlist", str(bad))
    assert r.returncode == 3 and "line 2" in r.stderr


def test_peft_directory_with_config_and_model_card(tmp_path):
    synth = corpus.build("sd1", "peft", rank=4, targets="attn", text_encoders=False)
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    corpus.write(folder / "adapter_model.safetensors", synth)
    config = dict(synth.adapter_config, base_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "README.md").write_text("---\nbase_model: black-forest-labs/FLUX.1-dev\nlicense: other\n---\n# card\n")
    rec = _json(run("inspect", str(folder), "--json"))
    assert rec["file"]["name"] == "adapter_model.safetensors"
    assert rec["fingerprint"]["family"] == "sd1"
    assert rec["claims"]["adapter_config"]["r"] == config["r"]
    assert sorted(rec["claims"]["sidecars"]) == ["README.md", "adapter_config.json"]
    by_source = {c["source"]: c for c in rec["claims"]["base_claims"]}
    assert by_source["adapter_config"]["value"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert by_source["readme"]["value"] == "black-forest-labs/FLUX.1-dev"
    # both files name other families than the tensors show
    for source, family in (("adapter_config", "sdxl"), ("readme", "flux1")):
        assert (by_source[source]["family"], by_source[source]["verdict"]) == (family, "contradicts")
    rec = _json(run("inspect", str(folder), "--json", "--no-sidecars"))
    assert "readme" not in {c["source"] for c in rec["claims"]["base_claims"]}


def test_stripped_metadata_is_noted(tmp_path):
    synth = corpus.build("sdxl", "kohya", rank=2, targets="attn", text_encoders=False)
    synth.metadata = {"format": "pt"}  # what a metadata-stripping tool leaves
    path = tmp_path / "stripped.safetensors"
    corpus.write(path, synth)
    rec = _json(run("inspect", str(path), "--json"))
    assert rec["claims"]["metadata"] in ("none", "stripped")
    assert "LA305" in [f["code"] for f in rec["findings"]]
    assert rec["fingerprint"]["family"] == "sdxl"


@pytest.mark.parametrize("family, fmt", [("sd1", "kohya"), ("sd2", "kohya"), ("sdxl", "diffusers-peft"),
                                          ("sd3", "kohya"), ("flux1", "diffusers-peft")])
def test_corpus_families_fingerprint_from_written_files(tmp_path, family, fmt):
    from audit.analyse import Options, inspect_file

    synth = corpus.build(family, fmt, rank=2, targets="attn", text_encoders=True, metadata={})
    path = tmp_path / f"{family}.safetensors"
    corpus.write(path, synth)
    rec = inspect_file(path, Options(hashes=False))
    assert rec.fingerprint.family == family, rec.fingerprint.reason
    assert rec.fingerprint.confidence in ("high", "medium")
