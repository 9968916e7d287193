"""audit/claims: training metadata read as typed, checked claims.

Metadata dicts are written by hand the way each trainer writes them (the writer is cited beside each one);
expected values are derived from the raw strings independently (int(), float(), json.loads, time.gmtime,
ast.literal_eval), never by calling the code under test. Declared-vs-stored rank and alpha run on files
written with audit/corpus.py and analysed with audit.analyse.inspect_file, and on hand-made LayerRecords.
"""

from __future__ import annotations

import ast
import json
import time

import pytest
from conftest import real_fixtures_dir

from audit import claims, corpus
from audit.analyse import Options, inspect_file
from audit.container import Limits, open_safetensors
from audit.record import AuditRecord, FileInfo, LayerRecord

REAL = real_fixtures_dir()


def codes(found) -> list[str]:
    return [f.code for f in found]


def only(found, code):
    hits = [f for f in found if f.code == code]
    assert len(hits) == 1, [(f.code, f.message) for f in found]
    return hits[0]


def layer(key="unet:m", rank=8, alpha=4.0, kind="lora", kernel=(), module=None, component="unet", tensors=None):
    module = module if module is not None else key.split(":", 1)[-1]
    return LayerRecord(
        key=key, component=component, module=module, block="other", kind=kind, format="kohya",
        tensors=list(tensors or [module + ".lora_down.weight"]), out_features=64, in_features=64,
        kernel=list(kernel), rank=rank, alpha=alpha, scale=1.0, scale_rule="alpha/rank", delta_basis="exact",
    )


def inspected(tmp_path, *args, name="x.safetensors", **kwargs):
    synth = corpus.build(*args, **kwargs)
    path = tmp_path / name
    corpus.write(path, synth)
    rec = inspect_file(path, Options(spectrum=False))
    assert rec.status == "ok"
    return synth, rec


# sd-scripts train_network.py (kohya-ss/sd-scripts @ 0010c81a): every value str()-ed, unset values "None",
# ss_training_*_at = str(time.time()), ss_optimizer = name + "(k=v,...)", JSON for the nested ones
KOHYA = {
    "ss_session_id": "2945453505",
    "ss_training_started_at": "1700000000.25",
    "ss_training_finished_at": "1700003600.75",
    "ss_output_name": "sks_dog_v1",
    "ss_learning_rate": "0.0001",
    "ss_text_encoder_lr": "5e-05",
    "ss_unet_lr": "0.0001",
    "ss_num_train_images": "400",
    "ss_num_reg_images": "0",
    "ss_num_batches_per_epoch": "200",
    "ss_num_epochs": "10",
    "ss_gradient_checkpointing": "True",
    "ss_gradient_accumulation_steps": "1",
    "ss_max_train_steps": "2000",
    "ss_lr_warmup_steps": "0",
    "ss_lr_scheduler": "cosine",
    "ss_network_module": "networks.lora",
    "ss_network_dim": "8",
    "ss_network_alpha": "4.0",
    "ss_network_dropout": "None",
    "ss_mixed_precision": "bf16",
    "ss_full_fp16": "False",
    "ss_v2": "False",
    "ss_base_model_version": "sd_v1",
    "ss_clip_skip": "2",
    "ss_max_token_length": "None",
    "ss_cache_latents": "True",
    "ss_seed": "1234",
    "ss_noise_offset": "0.05",
    "ss_min_snr_gamma": "5.0",
    "ss_training_comment": "trigger: sks dog",
    "ss_sd_scripts_commit_hash": "8eb60baf3a920fb83a862d95fbfc73d1d19b7b31",
    "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1,betas=(0.9, 0.99))",
    "ss_caption_dropout_rate": "0.05",
    "ss_caption_dropout_every_n_epochs": "0",
    "ss_caption_tag_dropout_rate": "0.0",
    "ss_batch_size_per_device": "2",
    "ss_total_batch_size": "2",
    "ss_resolution": "(512, 768)",
    "ss_shuffle_caption": "True",
    "ss_keep_tokens": "1",
    "ss_dataset_dirs": json.dumps({"10_sks dog": {"n_repeats": 10, "img_count": 20},
                                   "5_photo": {"n_repeats": 5, "img_count": 40}}),
    "ss_reg_dataset_dirs": "{}",
    "ss_tag_frequency": json.dumps({"10_sks dog": {"sks dog": 19, "grass": 4, "solo": 12},
                                    "5_photo": {"photo": 17, "grass": 30}}),
    "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
    "ss_sd_model_hash": "81761151",
    "ss_new_sd_model_hash": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
    "ss_steps": "2000",
    "ss_epoch": "10",
    "sshs_model_hash": "150ef207aad02214f69756f53c3fc56efacdf6c79e32dd76e5fcbcf6c6a5350f",
    "modelspec.sai_model_spec": "1.0.1",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.implementation": "diffusers",
    "modelspec.title": "sks dog",
    "modelspec.implementation_version": "sd-scripts/8eb60baf3a920fb83a862d95fbfc73d1d19b7b31",
}

# ostris/ai-toolkit toolkit/metadata.py get_meta_for_safetensors + BaseSDTrainProcess.update_training_metadata
AI_TOOLKIT = {
    "format": "pt",
    "software": json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit",
                            "version": "0.2.1"}),
    "name": "my_flux_lora",
    "version": "1.0",
    "training_info": json.dumps({"step": 1500, "epoch": 3}),
    "ss_base_model_version": "flux.1",
    "ss_output_name": "my_flux_lora",
    "ss_tag_frequency": json.dumps({"1_ohwx woman": {"ohwx woman": 1}}),
}

# Nerogar/OneTrainer _create_safetensors_header: ModelSpec.to_dict (required keys even when empty),
# ot_branch / ot_revision / ot_config, and the kohya keys for A1111
ONETRAINER = {
    "modelspec.sai_model_spec": "1.0.0",
    "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
    "modelspec.title": "",
    "modelspec.date": "2025-01-01",
    "modelspec.license": "CreativeML Open RAIL++-M License",
    "ot_branch": "master",
    "ot_revision": "23df38329d8e8d3f3a4b0c6d1e2f3a4b5c6d7e8f",
    "ot_config": json.dumps({
        "training_method": "LORA", "model_type": "STABLE_DIFFUSION_XL_10_BASE",
        "base_model_name": "stabilityai/stable-diffusion-xl-base-1.0", "learning_rate": 0.0003,
        "learning_rate_scheduler": "CONSTANT", "epochs": 100, "batch_size": 4,
        "gradient_accumulation_steps": 1, "resolution": "1024", "lora_rank": 16, "lora_alpha": 1.0,
        "peft_type": "LORA", "optimizer": {"optimizer": "ADAMW", "weight_decay": 0.01},
        "train_dtype": "BFLOAT_16",
    }),
    "ss_base_model_version": "sdxl_",
}

# kohya-ss/musubi-tuner hv_train_network.py: the ss_* scheme with the architecture full name
MUSUBI = {
    "ss_session_id": "1",
    "ss_training_started_at": "1735689600.0",
    "ss_output_name": "wan_lora",
    "ss_learning_rate": "0.0002",
    "ss_num_train_items": "120",
    "ss_num_batches_per_epoch": "120",
    "ss_num_epochs": "16",
    "ss_max_train_steps": "1920",
    "ss_base_model_version": "wan",
    "ss_network_module": "networks.lora_wan",
    "ss_network_dim": "32",
    "ss_network_alpha": "16.0",
    "ss_mixed_precision": "bf16",
    "ss_seed": "42",
    "ss_optimizer": "torch.optim.adamw.AdamW",
    "ss_timestep_sampling": "shift",
    "ss_discrete_flow_shift": "3.0",
}

# huggingface/diffusers loaders/lora_base.py: the PEFT LoraConfig under lora_adapter_metadata
DIFFUSERS = {
    "format": "pt",
    "lora_adapter_metadata": json.dumps({
        "transformer.r": 16, "transformer.lora_alpha": 16, "transformer.peft_type": "LORA",
        "transformer.base_model_name_or_path": "black-forest-labs/FLUX.1-dev", "transformer.use_dora": False,
    }),
}

# PEFT adapter_config.json (LoraConfig.to_dict)
PEFT_CONFIG = {
    "peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": False, "use_dora": False,
    "rank_pattern": {}, "alpha_pattern": {}, "target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
    "base_model_name_or_path": "runwayml/stable-diffusion-v1-5", "task_type": None,
}


# ---------------------------------------------------------------------------------------------------------
# metadata state: none / stripped / present (LA305)


def test_no_metadata_is_none_with_la305():
    c, found = claims.read(None, [])
    assert c.metadata == "none"
    assert "no __metadata__" in only(found, "LA305").message


def test_empty_metadata_is_none_with_la305():
    c, found = claims.read({}, [])
    assert c.metadata == "none"
    assert "empty" in only(found, "LA305").message


@pytest.mark.parametrize("meta", [
    {"format": "pt"},  # diffusers save_lora_weights / a stripped ai-toolkit file
    {"modelspec.title": "my lora"},
    {"modelspec.title": "x", "modelspec.architecture": "stable-diffusion-v1/lora", "sshs_model_hash": "ab12"},
])
def test_metadata_without_training_keys_is_stripped(meta):
    c, found = claims.read(meta, [])
    assert c.metadata == "stripped"
    msg = only(found, "LA305").message
    assert "stripped" in msg and repr(min(meta)) in msg and f"{len(meta)} key(s)" in msg
    assert c.trainer is None and c.training == {}


@pytest.mark.parametrize("meta", [KOHYA, AI_TOOLKIT, ONETRAINER, MUSUBI, DIFFUSERS, {"unet:0:rank": "4"}])
def test_training_metadata_is_present_without_la305(meta):
    c, found = claims.read(meta, [])
    assert c.metadata == "present"
    assert "LA305" not in codes(found)


def test_adapter_config_beside_a_stripped_file_does_not_make_its_metadata_present():
    c, found = claims.read({"format": "pt"}, [], adapter_config=PEFT_CONFIG)
    assert c.metadata == "stripped" and "LA305" in codes(found)
    assert c.trainer == "peft"
    assert c.training["network_dim"] == 8 and c.training["network_alpha"] == 16.0


# ---------------------------------------------------------------------------------------------------------
# trainer


@pytest.mark.parametrize("meta, config, trainer, evidence", [
    (KOHYA, None, "kohya", "ss_network_module=networks.lora"),
    (MUSUBI, None, "musubi-tuner", "ss_network_module=networks.lora_wan"),
    ({"ss_network_module": "networks.lora", "ss_base_model_version": "qwen_image"}, None, "musubi-tuner",
     "ss_base_model_version=qwen_image"),
    (AI_TOOLKIT, None, "ai-toolkit", "software.name=ai-toolkit"),
    (ONETRAINER, None, "onetrainer", "ot_branch=master"),
    (DIFFUSERS, None, "diffusers", "lora_adapter_metadata"),
    ({"format": "pt"}, PEFT_CONFIG, "peft", "adapter_config.json"),
    ({"unet:0:rank": "4", "unet": '["CrossAttention"]'}, None, "cloneofsimo", "unet:0:rank"),
    ({"lycoris_config": json.dumps({"algo": "lokr", "linear_dim": 10000})}, None, "lycoris", "lycoris_config"),
    ({"ss_base_model_version": "sdxl_base_v1-0"}, None, "kohya", "ss_base_model_version"),
])
def test_trainer_and_evidence(meta, config, trainer, evidence):
    c, _ = claims.read(meta, [], adapter_config=config)
    assert c.trainer == trainer
    assert any(evidence in e for e in c.training["trainer_evidence"]), c.training["trainer_evidence"]


def test_software_name_other_than_ai_toolkit_names_no_trainer():
    c, _ = claims.read({"software": json.dumps({"name": "ai-toolkit-fork"}), "format": "pt"}, [])
    assert c.trainer is None


def test_kohya_evidence_includes_the_implementation_version():
    c, _ = claims.read(KOHYA, [])
    assert "modelspec.implementation_version=sd-scripts/8eb60baf3a920fb83a862d95fbfc73d1d19b7b31" in \
        c.training["trainer_evidence"]


# ---------------------------------------------------------------------------------------------------------
# typed training parameters


def _iso(seconds: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(float(seconds))))


def test_kohya_training_values_typed_from_the_raw_strings():
    c, found = claims.read(KOHYA, [])
    t = c.training
    assert [f for f in found if f.code == "LA312"] == []
    for typed, key in [("epochs", "ss_num_epochs"), ("max_train_steps", "ss_max_train_steps"),
                       ("steps", "ss_steps"), ("epoch", "ss_epoch"), ("batch_size", "ss_batch_size_per_device"),
                       ("gradient_accumulation", "ss_gradient_accumulation_steps"),
                       ("num_train_images", "ss_num_train_images"), ("num_reg_images", "ss_num_reg_images"),
                       ("num_batches_per_epoch", "ss_num_batches_per_epoch"), ("seed", "ss_seed"),
                       ("clip_skip", "ss_clip_skip"), ("network_dim", "ss_network_dim"),
                       ("keep_tokens", "ss_keep_tokens"), ("session_id", "ss_session_id"),
                       ("lr_warmup_steps", "ss_lr_warmup_steps")]:
        assert t[typed] == int(KOHYA[key]) and type(t[typed]) is int, typed
    for typed, key in [("learning_rate", "ss_learning_rate"), ("unet_lr", "ss_unet_lr"),
                       ("text_encoder_lr", "ss_text_encoder_lr"), ("network_alpha", "ss_network_alpha"),
                       ("noise_offset", "ss_noise_offset"), ("min_snr_gamma", "ss_min_snr_gamma"),
                       ("caption_dropout_rate", "ss_caption_dropout_rate")]:
        assert t[typed] == float(KOHYA[key]) and type(t[typed]) is float, typed
    assert t["gradient_checkpointing"] is True and t["full_fp16"] is False and t["shuffle_caption"] is True
    assert t["network_module"] == "networks.lora" and t["lr_scheduler"] == "cosine"
    assert t["mixed_precision"] == "bf16"
    assert t["resolution"] == list(ast.literal_eval(KOHYA["ss_resolution"]))  # (width, height)
    assert t["training_started_at"] == _iso(KOHYA["ss_training_started_at"]) == "2023-11-14T22:13:20Z"
    assert t["training_finished_at"] == _iso(KOHYA["ss_training_finished_at"])
    assert t["training_seconds"] == pytest.approx(3600.5)
    assert t["optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"
    assert t["optimizer_args"] == {"weight_decay": "0.1", "betas": "(0.9, 0.99)"}
    assert t["base_model_name"] == KOHYA["ss_sd_model_name"]
    assert t["base_model_hash"] == KOHYA["ss_sd_model_hash"]
    assert t["base_model_sha256"] == KOHYA["ss_new_sd_model_hash"]
    assert t["output_name"] == "sks_dog_v1" and t["training_comment"] == "trigger: sks dog"
    assert t["trainer_version"] == KOHYA["ss_sd_scripts_commit_hash"]
    # "None" is how sd-scripts writes an unset value: absent, and not malformed
    assert "network_dropout" not in t and "max_token_length" not in t


def test_training_holds_only_typed_keys():
    meta = dict(KOHYA, ss_future_key="whatever", ss_huber_c="0.1", custom="x")
    c, _ = claims.read(meta, [])
    assert "whatever" not in json.dumps(c.training) and "ss_future_key" not in c.training
    assert all(not k.startswith("ss_") for k in c.training)


@pytest.mark.parametrize("raw, expected", [
    ("(512, 768)", [512, 768]),
    ("512,768", [512, 768]),
    ("512", [512, 512]),
    ("[640, 480]", [640, 480]),
    ("(1024,)", [1024, 1024]),
    ("1024x768", [1024, 768]),
    (" ( 768 , 512 ) ", [768, 512]),
])
def test_resolution_forms(raw, expected):
    c, found = claims.read({"ss_resolution": raw}, [])
    assert c.training["resolution"] == expected
    assert "LA312" not in codes(found)


@pytest.mark.parametrize("raw", ["abc", "(0, 512)", "512,512,3", "(512, -1)", "5e2x", "9" * 80, "(1e9, 512)"])
def test_malformed_resolution_is_left_out_with_one_la312(raw):
    c, found = claims.read({"ss_resolution": raw}, [])
    assert "resolution" not in c.training
    f = only(found, "LA312")
    assert "'ss_resolution'" in f.message and f.where == "__metadata__.ss_resolution"


@pytest.mark.parametrize("key, raw, typed", [
    ("ss_max_train_steps", "-5", "max_train_steps"),
    ("ss_max_train_steps", "1e13", "max_train_steps"),  # > 10^12: absurd
    ("ss_num_epochs", "NaN", "epochs"),
    ("ss_num_epochs", "inf", "epochs"),
    ("ss_steps", "12.5", "steps"),
    ("ss_steps", "\u0661\u0662\u0663", "steps"),  # Arabic-Indic digits: int() would take them, the grammar not
    ("ss_steps", "1_000", "steps"),
    ("ss_learning_rate", "fast", "learning_rate"),
    ("ss_learning_rate", "-0.1", "learning_rate"),
    ("ss_learning_rate", "1e400", "learning_rate"),
    ("ss_network_dim", "0", "network_dim"),
    ("ss_network_alpha", "-1", "network_alpha"),
    ("ss_shuffle_caption", "maybe", "shuffle_caption"),
    ("ss_training_started_at", "-1", "training_started_at"),
    ("ss_training_started_at", "1e15", "training_started_at"),
    ("ss_caption_dropout_rate", "1.5", "caption_dropout_rate"),
    ("ss_sd_model_hash", "not-a-hash", "base_model_hash"),
    ("ss_batch_size_per_device", "0", "batch_size"),
])
def test_malformed_value_is_left_out_with_one_la312(key, raw, typed):
    c, found = claims.read(dict(KOHYA, **{key: raw}), [])
    assert typed not in c.training
    f = only(found, "LA312")
    assert repr(key) in f.message and repr(raw) in f.message and f.where == "__metadata__." + key


def test_valid_edge_values_are_kept():
    meta = {"ss_max_train_steps": "1000000000000", "ss_seed": "-7", "ss_steps": "+12", "ss_epoch": "3.0",
            "ss_learning_rate": "1E-4", "ss_lr_warmup_steps": "0.1", "ss_caption_dropout_rate": "1"}
    c, found = claims.read(meta, [])
    t = c.training
    assert "LA312" not in codes(found)
    assert t["max_train_steps"] == 10**12 and t["seed"] == -7 and t["steps"] == 12 and t["epoch"] == 3
    assert t["learning_rate"] == 1e-4 and t["lr_warmup_steps"] == 0.1 and t["caption_dropout_rate"] == 1.0


def test_la312_message_truncates_a_long_value():
    _c, found = claims.read({"ss_max_train_steps": "x" * 100_000}, [])
    f = only(found, "LA312")
    assert len(f.message) < 200 and "..." in f.message


def test_every_malformed_key_gets_exactly_one_la312():
    meta = {"ss_max_train_steps": "a", "ss_num_epochs": "b", "ss_seed": "c",
            "ss_tag_frequency": json.dumps({"1_x": {"t1": "3", "t2": 2.5, "t3": True, "t4": -1, "ok": 2}})}
    _c, found = claims.read(meta, [])
    la312 = sorted(f.where for f in found if f.code == "LA312")
    assert la312 == ["__metadata__.ss_max_train_steps", "__metadata__.ss_num_epochs", "__metadata__.ss_seed",
                     "__metadata__.ss_tag_frequency"]


def test_dynamic_dim_and_alpha_of_resized_loras():
    # sd-scripts networks/resize_lora.py writes "Dynamic" for both
    c, found = claims.read({"ss_network_dim": "Dynamic", "ss_network_alpha": "Dynamic"}, [])
    assert c.training["network_dim"] == "dynamic" and c.training["network_alpha"] == "dynamic"
    assert "LA312" not in codes(found)


def test_text_encoder_lr_list():
    c, found = claims.read({"ss_text_encoder_lr": "[0.0001, 5e-05]"}, [])
    assert c.training["text_encoder_lr"] == [0.0001, 5e-05]
    c, found = claims.read({"ss_text_encoder_lr": "[0.0001, -1]"}, [])
    assert "text_encoder_lr" not in c.training and codes(found).count("LA312") == 1


@pytest.mark.parametrize("raw, name, args", [
    ("torch.optim.adamw.AdamW", "torch.optim.adamw.AdamW", None),
    ("Prodigy(decouple=True,d_coef=2,betas=(0.9, 0.99),use_bias_correction=False)", "Prodigy",
     {"decouple": "True", "d_coef": "2", "betas": "(0.9, 0.99)", "use_bias_correction": "False"}),
    ("AdamW()", "AdamW", None),
])
def test_optimizer_forms(raw, name, args):
    c, found = claims.read({"ss_optimizer": raw}, [])
    assert c.training["optimizer"] == name and c.training.get("optimizer_args") == args
    assert "LA312" not in codes(found)


@pytest.mark.parametrize("raw", ["Adam(lr=1", "Adam(lr=(1)", "Adam(1e-3)", "(a=1)", "Adam(a=1))"])
def test_malformed_optimizer(raw):
    c, found = claims.read({"ss_optimizer": raw}, [])
    assert "optimizer" not in c.training and "'ss_optimizer'" in only(found, "LA312").message


def test_network_args():
    args = {"algo": "LoKr", "conv_dim": "4", "conv_alpha": "2", "factor": "8", "preset": "attn-mlp"}
    c, found = claims.read({"ss_network_args": json.dumps(args)}, [])
    t = c.training
    assert t["network_args"] == args and t["algo"] == "lokr" and t["conv_dim"] == 4 and t["conv_alpha"] == 2.0
    assert "LA312" not in codes(found)
    c, found = claims.read({"ss_network_args": json.dumps({"conv_dim": "four"})}, [])
    assert "conv_dim" not in c.training
    assert only(found, "LA312").where == "__metadata__.ss_network_args.conv_dim"


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '{"a": NaN}', "[" * 200 + "]" * 200, '{"a": 1, "a": 2}'])
def test_malformed_network_args(raw):
    c, found = claims.read({"ss_network_args": raw}, [])
    assert "network_args" not in c.training
    assert only(found, "LA312").where == "__metadata__.ss_network_args"


def test_network_args_are_bounded():
    args = {f"k{i}": "v" * 600 for i in range(100)}
    c, _ = claims.read({"ss_network_args": json.dumps(args)}, [])
    kept = c.training["network_args"]
    assert len(kept) == claims.MAX_ITEMS and all(len(v) == claims.MAX_STR for v in kept.values())


def test_ai_toolkit_training_values():
    c, found = claims.read(AI_TOOLKIT, [])
    assert c.training["steps"] == 1500 and c.training["epoch"] == 3
    assert c.training["trainer_version"] == "0.2.1" and c.training["output_name"] == "my_flux_lora"
    assert "LA312" not in codes(found)


def test_onetrainer_training_values():
    c, found = claims.read(ONETRAINER, [])
    cfg = json.loads(ONETRAINER["ot_config"])
    t = c.training
    assert t["network_dim"] == cfg["lora_rank"] and t["network_alpha"] == cfg["lora_alpha"]
    assert t["learning_rate"] == cfg["learning_rate"] and t["epochs"] == cfg["epochs"]
    assert t["batch_size"] == cfg["batch_size"] and t["resolution"] == [1024, 1024]
    assert t["optimizer"] == "ADAMW" and t["lr_scheduler"] == "CONSTANT"
    assert t["model_type"] == cfg["model_type"] and t["base_model_name"] == cfg["base_model_name"]
    assert t["trainer_version"] == ONETRAINER["ot_revision"]
    assert "LA312" not in codes(found)


def test_onetrainer_malformed_config_value():
    cfg = dict(json.loads(ONETRAINER["ot_config"]), epochs="many", resolution="512,768")
    c, found = claims.read(dict(ONETRAINER, ot_config=json.dumps(cfg)), [])
    assert "epochs" not in c.training and "resolution" not in c.training  # a list of sizes types to nothing
    assert only(found, "LA312").where == "__metadata__.ot_config.epochs"


def test_musubi_training_values():
    c, _ = claims.read(MUSUBI, [])
    t = c.training
    assert t["num_train_items"] == 120 and t["network_dim"] == 32 and t["network_alpha"] == 16.0
    assert t["discrete_flow_shift"] == 3.0 and t["timestep_sampling"] == "shift"
    assert t["training_started_at"] == _iso(MUSUBI["ss_training_started_at"]) == "2025-01-01T00:00:00Z"
    assert "training_seconds" not in t


def test_diffusers_and_peft_config_values():
    c, _ = claims.read(DIFFUSERS, [])
    assert c.training["network_dim"] == 16 and c.training["network_alpha"] == 16.0
    assert c.training["use_dora"] is False and c.training["peft_type"] == "LORA"
    c, _ = claims.read(None, [], adapter_config=PEFT_CONFIG)
    assert c.adapter_config == PEFT_CONFIG
    assert c.training["network_dim"] == 8 and c.training["network_alpha"] == 16.0


def test_adapter_config_is_bounded():
    cfg = dict(PEFT_CONFIG, target_modules=[f"m{i}" for i in range(1000)], note="n" * 10_000)
    c, _ = claims.read(None, [], adapter_config=cfg)
    assert len(c.adapter_config["target_modules"]) == claims.MAX_ITEMS
    assert len(c.adapter_config["note"]) == claims.MAX_STR


def test_non_string_metadata_value_is_malformed():
    c, found = claims.read({"ss_steps": 12}, [])  # type: ignore[dict-item]
    assert "steps" not in c.training and only(found, "LA312").where == "__metadata__.ss_steps"


# ---------------------------------------------------------------------------------------------------------
# modelspec


def test_modelspec_without_prefix_and_bounded():
    meta = {"modelspec.title": "T", "modelspec.thumbnail": "data:image/png;base64," + "A" * 100_000,
            "modelspecx": "not one", "modelspec.": "empty name"}
    c, _ = claims.read(meta, [])
    assert c.modelspec["title"] == "T"
    assert len(c.modelspec["thumbnail"]) == claims.MAX_TEXT
    assert meta["modelspec.thumbnail"].startswith(c.modelspec["thumbnail"])
    assert set(c.modelspec) == {"title", "thumbnail"}
    many = {f"modelspec.k{i}": "v" for i in range(1000)}
    c, _ = claims.read(many, [])
    assert len(c.modelspec) == claims.MAX_MODELSPEC


# ---------------------------------------------------------------------------------------------------------
# base-model claims


def _claims_of(c):
    return [(x.source, x.key, x.value) for x in c.base_claims]


def test_kohya_base_claims():
    c, _ = claims.read(KOHYA, [])
    assert _claims_of(c) == [
        ("metadata", "ss_base_model_version", "sd_v1"),
        ("metadata", "ss_sd_model_name", "v1-5-pruned-emaonly.safetensors"),
        ("metadata", "modelspec.architecture", "stable-diffusion-v1/lora"),
    ]  # ss_v2 "False" names no family (SD1 and SDXL trainings both write it): not a claim
    assert all(x.family is None and x.verdict == "unverifiable" for x in c.base_claims)
    c, _ = claims.read(dict(KOHYA, ss_v2="True"), [])
    assert _claims_of(c)[-1] == ("metadata", "ss_v2", "True")


def test_ai_toolkit_and_onetrainer_base_claims_skip_empty_values():
    c, _ = claims.read(dict(AI_TOOLKIT, ss_base_model="flux1-dev"), [])
    assert _claims_of(c) == [("metadata", "ss_base_model_version", "flux.1"),
                             ("metadata", "ss_base_model", "flux1-dev")]
    c, _ = claims.read(dict(ONETRAINER, **{"modelspec.architecture": ""}), [])
    cfg = json.loads(ONETRAINER["ot_config"])
    assert _claims_of(c) == [("metadata", "ss_base_model_version", "sdxl_"),
                             ("metadata", "ot_config.model_type", cfg["model_type"]),
                             ("metadata", "ot_config.base_model_name", cfg["base_model_name"])]


def test_peft_and_diffusers_base_claims():
    c, _ = claims.read(DIFFUSERS, [], adapter_config=PEFT_CONFIG)
    assert _claims_of(c) == [
        ("metadata", "lora_adapter_metadata.transformer.base_model_name_or_path", "black-forest-labs/FLUX.1-dev"),
        ("adapter_config", "base_model_name_or_path", "runwayml/stable-diffusion-v1-5"),
    ]
    flat = {"lora_adapter_metadata": json.dumps({"r": 4, "base_model_name_or_path": "x/y"})}
    c, _ = claims.read(flat, [])
    assert _claims_of(c) == [("metadata", "lora_adapter_metadata.base_model_name_or_path", "x/y")]


def test_malformed_ss_v2_is_no_claim():
    c, found = claims.read({"ss_v2": "yes please"}, [])
    assert c.base_claims == [] and only(found, "LA312").where == "__metadata__.ss_v2"


# ---------------------------------------------------------------------------------------------------------
# datasets and tag frequency


def test_dataset_folders_from_kohya_metadata():
    c, _found = claims.read(KOHYA, [])
    dirs = json.loads(KOHYA["ss_dataset_dirs"])
    freq = json.loads(KOHYA["ss_tag_frequency"])
    assert [f.name for f in c.datasets] == list(dirs)
    for f in c.datasets:
        assert f.images == dirs[f.name]["img_count"] and f.repeats == dirs[f.name]["n_repeats"]
        assert f.distinct_tags == len(freq[f.name])
        expect = sorted(freq[f.name].items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        assert [(t.tag, t.count) for t in f.top_tags] == expect
    assert c.tags_total == len(set(freq["10_sks dog"]) | set(freq["5_photo"])) == 4  # "grass" in both


def test_top_tags_keep_twenty_by_count_then_tag():
    tags = {f"t{i:02d}": 100 - i // 2 for i in range(50)}  # pairs share a count
    c, _ = claims.read({"ss_tag_frequency": json.dumps({"x": tags})}, [])
    (f,) = c.datasets
    assert f.distinct_tags == 50 and len(f.top_tags) == 20
    assert [t.tag for t in f.top_tags] == [f"t{i:02d}" for i in range(20)]
    assert [t.count for t in f.top_tags] == [100 - i // 2 for i in range(20)]


def test_repeats_from_the_folder_name_when_dataset_dirs_are_absent():
    freq = {"10_sks dog": {"a": 1}, "photos": {"b": 1}, "3_": {"c": 1}, "07_x_y": {"d": 1}}
    c, _ = claims.read({"ss_tag_frequency": json.dumps(freq)}, [])
    assert [(f.name, f.repeats, f.images) for f in c.datasets] == [
        ("10_sks dog", 10, None), ("photos", None, None), ("3_", 3, None), ("07_x_y", 7, None)]


def test_non_integer_counts_are_ignored_with_one_la312():
    freq = {"1_x": {"good": 3, "text": "3", "float": 2.5, "bool": True, "neg": -1, "big": 10**13}}
    dirs = {"1_x": {"n_repeats": "1", "img_count": 4.0}}
    c, found = claims.read({"ss_tag_frequency": json.dumps(freq), "ss_dataset_dirs": json.dumps(dirs)}, [])
    (f,) = c.datasets
    assert [(t.tag, t.count) for t in f.top_tags] == [("good", 3)] and f.distinct_tags == 1
    assert f.images is None and f.repeats == 1  # n_repeats unusable: taken from the name
    assert sorted(x.where for x in found if x.code == "LA312") == ["__metadata__.ss_dataset_dirs",
                                                                    "__metadata__.ss_tag_frequency"]


def test_folder_entry_not_an_object():
    c, found = claims.read({"ss_tag_frequency": json.dumps({"1_x": [1, 2], "2_y": {"t": 1}})}, [])
    assert [f.name for f in c.datasets] == ["1_x", "2_y"] and c.datasets[0].top_tags == []
    assert only(found, "LA312").where == "__metadata__.ss_tag_frequency"


def test_dataset_bounds():
    freq = {f"{i}_f{i}": {"t": 1} for i in range(1, 1000)}
    c, _ = claims.read({"ss_tag_frequency": json.dumps(freq)}, [])
    assert len(c.datasets) == claims.MAX_FOLDERS
    long_name = "1_" + "n" * 5000
    c, _ = claims.read({"ss_tag_frequency": json.dumps({long_name: {"t" * 5000: 1}})}, [])
    assert len(c.datasets[0].name) == claims.MAX_STR and len(c.datasets[0].top_tags[0].tag) == claims.MAX_TAG


def test_invalid_tag_frequency_json():
    c, found = claims.read({"ss_tag_frequency": "{" * 100 + "}" * 100}, [])
    assert c.datasets == [] and c.tags_total == 0
    assert only(found, "LA312").where == "__metadata__.ss_tag_frequency"


# ---------------------------------------------------------------------------------------------------------
# trigger words


def _triggers(c):
    return [(t.word, t.sources) for t in c.triggers]


def test_triggers_with_all_their_sources_deduplicated_and_ordered():
    meta = dict(KOHYA)
    meta["modelspec.trigger_phrase"] = "Neon Style, sks dog,  ,"
    meta["ssmd_keywords"] = "NEON STYLE, extra"
    c, _ = claims.read(meta, [])
    # "sks dog": trigger phrase, folder "10_sks dog", and 19 of 20 images (>= 0.9); "5_photo": "grass" is the
    # top tag with 30 of 40 (< 0.9), so no tag trigger; "photo" is the folder's class token
    assert _triggers(c) == [
        ("sks dog", ["modelspec.trigger_phrase", "dataset_folder", "ss_tag_frequency"]),
        ("Neon Style", ["modelspec.trigger_phrase", "ssmd_keywords"]),
        ("extra", ["ssmd_keywords"]),
        ("photo", ["dataset_folder"]),
    ]


@pytest.mark.parametrize("count, images, is_trigger", [(18, 20, True), (17, 20, False), (9, 10, True),
                                                        (8, 10, False), (1, 1, True)])
def test_top_tag_share_threshold(count, images, is_trigger):
    meta = {"ss_tag_frequency": json.dumps({"concept": {"tok": count, "other": 1}}),
            "ss_dataset_dirs": json.dumps({"concept": {"n_repeats": 1, "img_count": images}})}
    c, _ = claims.read(meta, [])
    assert (("tok", ["ss_tag_frequency"]) in _triggers(c)) is is_trigger


def test_top_tag_needs_a_known_image_count():
    c, _ = claims.read({"ss_tag_frequency": json.dumps({"concept": {"tok": 50}})}, [])
    assert c.triggers == []


def test_top_tag_ties_follow_the_writer_order():
    # sd-scripts fills the frequency dict caption by caption; a trigger is conventionally first in a caption
    meta = {"ss_tag_frequency": json.dumps({"c": {"zeta tok": 5, "alpha": 5}}),
            "ss_dataset_dirs": json.dumps({"c": {"n_repeats": 1, "img_count": 5}})}
    c, _ = claims.read(meta, [])
    assert _triggers(c) == [("zeta tok", ["ss_tag_frequency"])]
    assert [t.tag for t in c.datasets[0].top_tags] == ["alpha", "zeta tok"]  # display order: count, then tag


def test_ai_toolkit_trigger_from_its_tag_frequency_folder():
    c, _ = claims.read(AI_TOOLKIT, [])
    assert _triggers(c) == [("ohwx woman", ["dataset_folder"])]
    assert c.datasets[0].repeats == 1 and c.datasets[0].images is None


def test_class_tokens_of_dataset_config_subsets():
    # sd-scripts dataset-config mode: ss_datasets lists the subsets with class_tokens and is_reg
    datasets = [{"resolution": [1024, 1024], "batch_size_per_device": 2, "subsets": [
        {"image_dir": "img", "class_tokens": "zxc person", "is_reg": False, "img_count": 10, "num_repeats": 2},
        {"image_dir": "reg", "class_tokens": "person", "is_reg": True, "img_count": 100, "num_repeats": 1},
    ]}]
    c, found = claims.read({"ss_datasets": json.dumps(datasets)}, [])
    assert _triggers(c) == [("zxc person", ["ss_datasets.class_tokens"])]
    assert c.training["resolution"] == [1024, 1024] and c.training["batch_size"] == 2
    assert "LA312" not in codes(found)


def test_duplicate_folder_suffix_names_the_same_class():
    dirs = {"4_abc cat": {"n_repeats": 4, "img_count": 2}, "4_abc cat (2)": {"n_repeats": 4, "img_count": 2}}
    c, _ = claims.read({"ss_dataset_dirs": json.dumps(dirs)}, [])
    assert _triggers(c) == [("abc cat", ["dataset_folder"])]


def test_bundled_embedding_placeholder_is_a_trigger():
    emb = layer("embedding:<myemb>.clip_l", kind="textual-inversion", rank=2, alpha=None, component="embedding",
                tensors=["bundle_emb.<myemb>.clip_l"])
    plain_ti = layer("embedding:emb_params", kind="textual-inversion", rank=2, alpha=None, component="embedding",
                     tensors=["emb_params"])
    c, _ = claims.read(None, [emb, plain_ti])
    assert _triggers(c) == [("<myemb>", ["bundle_emb"])]


def test_trigger_count_is_bounded_and_regex_text_is_plain_text():
    words = ", ".join(f"w{i}(.*)+$" for i in range(500))
    c, _ = claims.read({"modelspec.trigger_phrase": words}, [])
    assert len(c.triggers) == claims.MAX_TRIGGERS and c.triggers[0].word == "w0(.*)+$"


# ---------------------------------------------------------------------------------------------------------
# declared rank / alpha against the stored layers (LA211 / LA212)


def test_corpus_kohya_lora_declared_values_match(tmp_path):
    synth, rec = inspected(tmp_path, "sd1", "kohya", rank=8)
    _c, found = claims.read(rec.file.metadata, rec.layers)
    assert synth.metadata["ss_network_dim"] == "8" and "LA211" not in codes(found) and "LA212" not in codes(found)


def test_corpus_kohya_declared_dim_differs(tmp_path):
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=8, metadata={"ss_network_dim": "16"})
    _c, found = claims.read(rec.file.metadata, rec.layers)
    f = only(found, "LA211")
    n = len([x for x in rec.layers if x.rank is not None])
    assert n == len(rec.layers) > 0
    assert f"{n} of {n} layer(s)" in f.message and "ss_network_dim 16" in f.message
    assert f.where in {x.key for x in rec.layers} and "LA212" not in codes(found)


def test_corpus_kohya_declared_alpha_differs(tmp_path):
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=8, alpha=3.0, metadata={"ss_network_alpha": "2.0"})
    _c, found = claims.read(rec.file.metadata, rec.layers)
    f = only(found, "LA212")
    assert all(x.alpha == 3.0 for x in rec.layers)
    assert f"{len(rec.layers)} of {len(rec.layers)}" in f.message and "alpha 3 (declared 2)" in f.message
    assert "LA211" not in codes(found)


def test_bf16_alpha_is_not_a_mismatch(tmp_path):
    # alpha 0.3 stored in bfloat16 reads back as 0.30078125
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=4, alpha=0.3, dtype="BF16", metadata={"ss_network_alpha": "0.3"})
    assert rec.layers[0].alpha == 0.30078125
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA212" not in codes(found)


def test_dynamic_dim_is_no_declaration(tmp_path):
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=8,
                       metadata={"ss_network_dim": "Dynamic", "ss_network_alpha": "Dynamic"})
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


def test_conv_dim_applies_to_kernels_above_1x1(tmp_path):
    synth, rec = inspected(tmp_path, "sd1", "kohya", adapter="locon", rank=8, targets="all", max_modules=80)
    convs = [x for x in rec.layers if any(k > 1 for k in x.kernel)]
    assert convs and any(x.kernel == [1, 1] for x in rec.layers)
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA211" not in codes(found)
    args = dict(json.loads(synth.metadata["ss_network_args"]), conv_dim="4")
    meta = dict(rec.file.metadata, ss_network_args=json.dumps(args))
    _, found = claims.read(meta, rec.layers)
    f = only(found, "LA211")
    assert f"{len(convs)} of {len(rec.layers)} layer(s)" in f.message and "conv_dim 4" in f.message
    assert f.where in {x.key for x in convs}


def test_kohya_conv_alpha_defaults_to_one(tmp_path):
    # sd-scripts networks/lora.py: conv_dim given without conv_alpha -> conv_alpha 1.0
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=8, targets="all", max_modules=80)
    convs = [x for x in rec.layers if any(k > 1 for k in x.kernel)]
    assert all(x.alpha == 4.0 for x in rec.layers)
    meta = dict(rec.file.metadata, ss_network_args=json.dumps({"conv_dim": "8"}))
    _, found = claims.read(meta, rec.layers)
    f = only(found, "LA212")
    assert f"{len(convs)} of {len(rec.layers)}" in f.message and "conv_alpha 1" in f.message
    meta = dict(rec.file.metadata, ss_network_args=json.dumps({"conv_dim": "8", "conv_alpha": "4"}))
    _, found = claims.read(meta, rec.layers)
    assert "LA212" not in codes(found)


def test_kohya_lora_without_conv_dim_compares_no_conv_layer(tmp_path):
    _, rec = inspected(tmp_path, "sd1", "kohya", rank=8, targets="all", max_modules=80)
    meta = {k: v for k, v in rec.file.metadata.items() if k != "ss_network_args"}
    _, found = claims.read(meta, rec.layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


def test_lycoris_conv_defaults_follow_the_linear_values(tmp_path):
    # lycoris/kohya.py: conv_dim defaults to network_dim, conv_alpha to network_alpha
    _synth, rec = inspected(tmp_path, "sd1", "kohya", adapter="locon", rank=8, targets="all", max_modules=80)
    assert any(any(k > 1 for k in x.kernel) for x in rec.layers)
    assert rec.file.metadata["ss_network_module"] == "lycoris.kohya"
    meta = dict(rec.file.metadata, ss_network_args=json.dumps({"algo": "locon"}))
    _, found = claims.read(meta, rec.layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)
    meta["ss_network_dim"] = "16"
    _, found = claims.read(meta, rec.layers)
    assert f"{len(rec.layers)} of {len(rec.layers)}" in only(found, "LA211").message


@pytest.mark.parametrize("rank, alpha, bad", [(8, 4.0, ()), (4, 2.0, ()), (6, 4.0, ("LA211",)),
                                               (8, 3.0, ("LA212",))])
def test_folded_kernel_accepts_linear_or_conv_values(rank, alpha, bad):
    # LoHa/LoKr factors stored 2-D fold a conv kernel into the input size: either declaration may apply
    x = layer("unet:down_blocks_0_downsamplers_0_conv", kind="lokr", rank=rank, alpha=alpha)
    x.extra["in_includes_kernel"] = True
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "8", "ss_network_alpha": "4",
            "ss_network_args": json.dumps({"algo": "lokr", "conv_dim": "4", "conv_alpha": "2"})}
    _, found = claims.read(meta, [x])
    assert tuple(c for c in codes(found) if c in ("LA211", "LA212")) == bad


def test_corpus_lokr_and_loha_with_convs_match(tmp_path):
    for adapter in ("lokr", "loha"):
        _, rec = inspected(tmp_path, "sd1", "kohya", adapter=adapter, rank=8, targets="all", max_modules=80,
                           name=adapter + ".safetensors")
        assert any("downsamplers" in x.module for x in rec.layers)
        _, found = claims.read(rec.file.metadata, rec.layers)
        assert "LA211" not in codes(found) and "LA212" not in codes(found)


def test_lokr_with_full_factors_has_no_comparable_rank_or_alpha(tmp_path):
    # LyCORIS forces alpha = lora_dim when both Kronecker factors are full: neither value is a declaration
    _, rec = inspected(tmp_path, "sd1", "kohya", adapter="lokr-full", rank=8, metadata={"ss_network_dim": "16"})
    assert all(x.rank is None for x in rec.layers) and rec.layers[0].alpha == 8.0
    assert rec.file.metadata["ss_network_alpha"] == "4.0"
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


def test_absent_alpha_is_not_a_mismatch(tmp_path):
    _, rec = inspected(tmp_path, "flux1", "ai-toolkit", rank=4, max_modules=20,
                       metadata={"ss_network_dim": "4", "ss_network_alpha": "16.0"})
    assert all(x.alpha is None for x in rec.layers)
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA212" not in codes(found) and "LA211" not in codes(found)
    _, found = claims.read(dict(rec.file.metadata, ss_network_dim="8"), rec.layers)
    assert "LA211" in codes(found)


@pytest.mark.parametrize("declared, stored, bad", [("0", 8.0, False), ("0", 0.0, False), ("0", 5.0, True),
                                                   ("None", 5.0, False)])
def test_alpha_zero_means_the_rank(declared, stored, bad):
    layers = [layer("unet:a", rank=8, alpha=stored)]
    _, found = claims.read({"ss_network_dim": "8", "ss_network_alpha": declared}, layers)
    assert ("LA212" in codes(found)) is bad


def test_non_rank_kinds_are_not_compared():
    layers = [layer("unet:o", kind="oft", rank=None, alpha=0.0), layer("unet:i", kind="ia3", rank=None, alpha=None),
              layer("unet:f", kind="full", rank=None, alpha=None),
              layer("embedding:e", kind="textual-inversion", rank=3, alpha=None, component="embedding")]
    _, found = claims.read({"ss_network_dim": "8", "ss_network_alpha": "1"}, layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


@pytest.mark.parametrize("kind", ["loha", "lokr", "dora", "glora", "lora-tucker"])
def test_ranked_kinds_are_compared(kind):
    _, found = claims.read({"ss_network_dim": "8"}, [layer("unet:a", kind=kind, rank=4)])
    assert "unet:a" in only(found, "LA211").message


@pytest.mark.parametrize("args", [
    {"block_dims": "2,4,4,4,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8,8"},  # sd-scripts per-block dims
    {"img_attn_dim": "4"},  # networks/lora_flux.py per-type dims
    {"network_reg_dims": "attn=4"},
    {"preset": "my_preset.toml"},  # a LyCORIS preset file may set per-module dims
])
def test_per_module_dims_disable_the_rank_check(args):
    layers = [layer("unet:a", rank=4, alpha=2.0)]
    meta = {"ss_network_dim": "8", "ss_network_alpha": "1", "ss_network_args": json.dumps(args)}
    _, found = claims.read(meta, layers)
    assert "LA211" not in codes(found)
    if "preset" in args:
        assert "LA212" not in codes(found)
    else:
        assert "LA212" in codes(found)


def test_per_module_alphas_and_rs_lora_disable_the_alpha_check():
    layers = [layer("unet:a", rank=8, alpha=2.0)]
    for args in ({"block_alphas": "1,2"}, {"rs_lora": "True"}):
        meta = {"ss_network_dim": "8", "ss_network_alpha": "1", "ss_network_args": json.dumps(args)}
        _, found = claims.read(meta, layers)
        assert "LA212" not in codes(found)


def test_builtin_lycoris_preset_keeps_the_checks():
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "8",
            "ss_network_args": json.dumps({"algo": "locon", "preset": "attn-mlp"})}
    _, found = claims.read(meta, [layer("unet:a", rank=4)])
    assert "LA211" in codes(found)


@pytest.mark.parametrize("module, rank, split, bad", [
    ("double_blocks_0_img_attn_qkv", 48, True, False),
    ("single_blocks_3_linear1", 64, True, False),
    ("double_blocks_0_img_attn_qkv", 40, True, True),
    ("double_blocks_0_img_attn_qkv", 48, False, True),
    ("double_blocks_0_img_attn_proj", 48, True, True),
])
def test_split_qkv_stores_merged_ranks(module, rank, split, bad):
    # networks/lora_flux.py split_qkv: down [n*r, in] with n = 3 (qkv) or 4 (single-block linear1)
    args = {"split_qkv": "True"} if split else {}
    meta = {"ss_network_module": "networks.lora_flux", "ss_network_dim": "16", "ss_network_args": json.dumps(args)}
    _, found = claims.read(meta, [layer("transformer:" + module, rank=rank, component="transformer")])
    assert ("LA211" in codes(found)) is bad


def test_peft_directory_config_matches_and_differs(tmp_path):
    synth, rec = inspected(tmp_path, "sd1", "peft", rank=8)
    cfg = synth.adapter_config
    assert all(x.alpha is None for x in rec.layers)
    _, found = claims.read(rec.file.metadata, rec.layers, adapter_config=cfg)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)
    _, found = claims.read(rec.file.metadata, rec.layers, adapter_config=dict(cfg, r=4, lora_alpha=99))
    f = only(found, "LA211")
    assert f"{len(rec.layers)} of {len(rec.layers)}" in f.message and "adapter_config.json" in f.message
    assert "LA212" not in codes(found)  # no alpha stored: nothing to compare


def test_peft_rank_pattern_is_matched_as_a_module_suffix(tmp_path):
    synth, rec = inspected(tmp_path, "sd1", "peft", rank=8)
    cfg = dict(synth.adapter_config, r=4, rank_pattern={"to_k": 8, "to_q": 8, "to_v": 8, "to_out.0": 8})
    _, found = claims.read(None, rec.layers, adapter_config=cfg)
    assert "LA211" not in codes(found)
    cfg["rank_pattern"] = {"to_k": 8}
    not_k = [x for x in rec.layers if not x.module.endswith(".to_k")]
    _, found = claims.read(None, rec.layers, adapter_config=cfg)
    f = only(found, "LA211")
    assert f"{len(not_k)} of {len(rec.layers)}" in f.message and "rank_pattern" in f.message


def test_peft_regex_patterns_are_not_resolved():
    cfg = dict(PEFT_CONFIG, r=4, rank_pattern={"^down_blocks.*to_k$": 8}, lora_alpha=1,
               alpha_pattern={".*": 2})
    _, found = claims.read(None, [layer("unet:down_blocks.0.to_k", rank=8, alpha=8.0)], adapter_config=cfg)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


def test_peft_alpha_and_alpha_pattern_against_stored_alphas():
    layers = [layer("unet:a.to_k", rank=8, alpha=16.0), layer("unet:a.to_q", rank=8, alpha=32.0)]
    _, found = claims.read(None, layers, adapter_config=dict(PEFT_CONFIG, lora_alpha=16))
    f = only(found, "LA212")
    assert "1 of 2" in f.message and f.where == "unet:a.to_q"
    _, found = claims.read(None, layers, adapter_config=dict(PEFT_CONFIG, lora_alpha=16,
                                                             alpha_pattern={"to_q": 32}))
    assert "LA212" not in codes(found)


def test_peft_loha_uses_alpha_and_ia3_is_skipped():
    layers = [layer("unet:a", kind="loha", rank=8, alpha=4.0)]
    _, found = claims.read(None, layers, adapter_config={"peft_type": "LOHA", "r": 8, "alpha": 2})
    assert "alpha 2" in only(found, "LA212").message
    _, found = claims.read(None, layers, adapter_config={"peft_type": "IA3", "r": 4})
    assert "LA211" not in codes(found)


def test_config_inside_the_file_is_left_to_the_scale_module(tmp_path):
    synth, rec = inspected(tmp_path, "sd1", "diffusers-peft", rank=8, max_modules=10)
    cfg = json.loads(synth.metadata["lora_adapter_metadata"])
    cfg = {k: (16 if k.endswith(".r") else v) for k, v in cfg.items()}
    _, rec = inspected(tmp_path, "sd1", "diffusers-peft", rank=8, max_modules=10, name="y.safetensors",
                       metadata={"lora_adapter_metadata": json.dumps(cfg)})
    assert "LA211" in codes(rec.findings)  # audit/adapters/scale.py reports it
    _, found = claims.read(rec.file.metadata, rec.layers)
    assert "LA211" not in codes(found) and "LA212" not in codes(found)


# ---------------------------------------------------------------------------------------------------------
# hostile input and serialisation


def test_claims_serialise_deterministically():
    meta = dict(KOHYA, **{"modelspec.trigger_phrase": "a\x1b[31m, b\u202e", "bad\udcff": "x\udcff"})
    c, _ = claims.read(meta, [layer()])
    rec = AuditRecord(file=FileInfo(path="p", name="p", size=0), claims=c)
    text = rec.to_json(timing=False)
    assert text == AuditRecord(file=FileInfo(path="p", name="p", size=0), claims=claims.read(meta, [layer()])[0]
                               ).to_json(timing=False)
    assert text.isascii() and json.loads(text)["claims"]["metadata"] == "present"


def test_read_does_not_modify_its_inputs():
    meta = dict(KOHYA)
    cfg = json.loads(json.dumps(PEFT_CONFIG))
    layers = [layer()]
    claims.read(meta, layers, adapter_config=cfg)
    assert meta == KOHYA and cfg == PEFT_CONFIG and layers == [layer()]


def test_adapter_config_not_a_mapping():
    c, found = claims.read(None, [], adapter_config=["r", 8])  # type: ignore[arg-type]
    assert c.adapter_config is None and only(found, "LA312").where == "adapter_config"


# ---------------------------------------------------------------------------------------------------------
# real files


def _real(name: str):
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real fixture {name} not present")
    with open_safetensors(path, Limits()) as sf:
        return path, sf.metadata


@pytest.mark.parametrize("n", [4, 8, 16])
def test_real_kohya_lycoris_lokr_metadata(n):
    path, raw = _real(f"lycoris-lokr-falcon{n}.safetensors")
    rec = inspect_file(path, Options(spectrum=False))
    c, found = claims.read(raw, rec.layers)
    assert codes(found) == []  # typed cleanly, declared dim/alpha match every layer
    assert c.metadata == "present" and c.trainer == "kohya"
    t = c.training
    assert t["network_dim"] == int(raw["ss_network_dim"]) == n
    assert t["network_alpha"] == float(raw["ss_network_alpha"])
    assert t["algo"] == json.loads(raw["ss_network_args"])["algo"] == "lokr"
    assert t["max_train_steps"] == int(raw["ss_max_train_steps"])
    assert t["epochs"] == int(raw["ss_num_epochs"]) and t["epoch"] == int(raw["ss_epoch"])
    assert t["num_train_images"] == int(raw["ss_num_train_images"])
    assert t["learning_rate"] == float(raw["ss_learning_rate"])
    assert t["text_encoder_lr"] == float(raw["ss_text_encoder_lr"])
    assert t["resolution"] == list(ast.literal_eval(raw["ss_resolution"]))
    assert t["seed"] == int(raw["ss_seed"]) and t["mixed_precision"] == raw["ss_mixed_precision"]
    assert t["optimizer"] + "(weight_decay=" + t["optimizer_args"]["weight_decay"] + ")" == raw["ss_optimizer"]
    assert t["training_started_at"] == _iso(raw["ss_training_started_at"])
    assert t["training_finished_at"] == _iso(raw["ss_training_finished_at"])
    assert t["training_seconds"] == pytest.approx(
        float(raw["ss_training_finished_at"]) - float(raw["ss_training_started_at"]))
    assert "clip_skip" not in t and raw["ss_clip_skip"] == "None"
    assert [x.key for x in c.base_claims] == ["ss_sd_model_name"]  # ss_v2 is "False": no claim
    # tag frequency, independently
    freq = json.loads(raw["ss_tag_frequency"])
    dirs = json.loads(raw["ss_dataset_dirs"])
    assert [f.name for f in c.datasets] == list(dirs)
    for f in c.datasets:
        assert (f.images, f.repeats) == (dirs[f.name]["img_count"], dirs[f.name]["n_repeats"])
        assert f.distinct_tags == len(freq[f.name])
        expect = sorted(freq[f.name].items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        assert [(x.tag, x.count) for x in f.top_tags] == expect
    assert c.tags_total == len(set().union(*(set(v) for v in freq.values())))
    words = [x.word for x in c.triggers]
    assert words[0] == "smf girl"  # kohya folder class tokens "<repeats>_smf girl"
    # the training comment names the trigger; the tag frequency shows it in every image of each folder
    assert "smart falcon \\(umamusume\\)" in words and raw["ss_training_comment"].endswith(words[1])


@pytest.mark.parametrize("name, state, trainer", [
    ("catundchat-sd15.safetensors", "stripped", None),
    ("lora-vit-lora.safetensors", "none", None),
    ("cloneofsimo-lora_disney.safetensors", "present", "cloneofsimo"),
])
def test_real_files_metadata_state(name, state, trainer):
    path, raw = _real(name)
    rec = inspect_file(path, Options(spectrum=False))
    c, found = claims.read(raw, rec.layers)
    assert c.metadata == state and c.trainer == trainer
    assert ("LA305" in codes(found)) is (state != "present")
