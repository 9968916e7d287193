"""Tiny models built in code, for offline tests and benchmarks of the probe: an SD-style diffusers pipeline
(about 15 MB), an open_clip model (about 7 MB) and LoRAs for them. Random weights: they exercise the plumbing and
the statistics, not the quality of any embedder. Nothing is downloaded: the CLIP tokenizer is written from the
BPE vocabulary that open_clip bundles. Configurations follow ../shared/reference/probe-science.md §4.3.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

CLIP_DIM = 32
TINY_SIZE = 64  # pixels of a generated image


def write_clip_tokenizer(dst: str | os.PathLike):
    """A transformers CLIPTokenizer from open_clip's bundled BPE (real CLIP tokenisation, 49,408 tokens)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (dst / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    return CLIPTokenizer(str(dst / "vocab.json"), str(dst / "merges.txt"), model_max_length=77)


def sd_pipeline(seed: int = 0):
    """A tiny StableDiffusionPipeline (random weights, CPU, float32)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = write_clip_tokenizer(tmp)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=TINY_SIZE // 8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CLIP_DIM, norm_num_groups=8, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=8, sample_size=TINY_SIZE)
    te = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_size=CLIP_DIM, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok),
        projection_dim=CLIP_DIM))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)


def write_sd_pipeline(dst: str | os.PathLike, seed: int = 0) -> Path:
    """The tiny SD pipeline as a diffusers folder (what ``--base`` takes)."""
    pipe = sd_pipeline(seed)
    pipe.save_pretrained(str(dst), safe_serialization=True)
    return Path(dst)


def write_sd_lora(pipe, dst: str | os.PathLike, *, rank: int = 4, scale: float = 1.0, seed: int = 0,
                  text_encoder: bool = False) -> Path:
    """A random LoRA on the pipeline's attention projections, saved in the diffusers-PEFT format
    (``pytorch_lora_weights.safetensors`` in ``dst``); ``scale`` multiplies the up-projections."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                     init_lora_weights=False)
    pipe.unet.add_adapter(cfg, adapter_name="tiny")
    te_layers = None
    if text_encoder:
        pipe.text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                                      adapter_name="tiny")
    with torch.no_grad():
        for model in (pipe.unet, pipe.text_encoder if text_encoder else None):
            if model is None:
                continue
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(scale)
    unet_layers = get_peft_model_state_dict(pipe.unet, adapter_name="tiny")
    if text_encoder:
        te_layers = get_peft_model_state_dict(pipe.text_encoder, adapter_name="tiny")
    type(pipe).save_lora_weights(str(dst), unet_lora_layers=unet_layers, text_encoder_lora_layers=te_layers,
                                 safe_serialization=True)
    pipe.unet.delete_adapters("tiny")
    if text_encoder:
        pipe.text_encoder.delete_adapters("tiny")
    return Path(dst) / "pytorch_lora_weights.safetensors"


def write_open_clip(dst: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny open_clip model folder for ``local-dir:`` (config plus safetensors weights)."""
    import open_clip
    import safetensors.torch
    import torch

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": CLIP_DIM,
           "vision_cfg": {"image_size": TINY_SIZE, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    pre = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (dst / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{dst}", load_weights=False)
    safetensors.torch.save_file(model.state_dict(), str(dst / "open_clip_model.safetensors"))
    return dst


def peft_to_kohya(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """The same UNet LoRA in kohya's key format (``lora_unet_<module>.lora_down/lora_up.weight`` and an
    ``alpha`` equal to the rank, so the scale stays 1): what a kohya-trained file looks like to the loader."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    out = {}
    for key, value in state.items():
        if not key.startswith("unet.") or ".lora_" not in key:
            raise ValueError(f"not a diffusers-PEFT UNet LoRA key: {key}")
        module, _, rest = key[len("unet."):].rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        if rest.startswith("A"):
            out[f"{name}.lora_down.weight"] = value.contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
        else:
            out[f"{name}.lora_up.weight"] = value.contiguous()
    save_file(out, str(dst), metadata={"ss_network_module": "networks.lora"})
    return Path(dst)


def flux_pipeline(seed: int = 0):
    """A tiny FluxPipeline (random weights): one double- and one single-stream block, a 1-channel latent VAE,
    a CLIP text encoder and a T5 encoder with a word-level tokenizer built in code."""
    import tempfile

    import tokenizers
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = write_clip_tokenizer(tmp)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    te = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok),
        projection_dim=32, hidden_act="gelu"))
    from audit.probe.design import LIKENESS_SUBJECTS, STYLE_SUBJECTS, TEMPLATES

    words = ["<pad>", "</s>", "<unk>"] + sorted({w.strip(",") for t in (*STYLE_SUBJECTS, *LIKENESS_SUBJECTS, *TEMPLATES)
                                                  for w in t.replace("{subject}", "").split() if w.strip(",")})
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok2 = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)
    te2 = T5EncoderModel(T5Config(vocab_size=len(words), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                                  pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=te, text_encoder_2=te2,
                        tokenizer=tok, tokenizer_2=tok2, transformer=transformer, vae=vae)


def write_flux_lora(pipe, dst: str | os.PathLike, *, rank: int = 4, scale: float = 1.0, seed: int = 0) -> Path:
    """A random LoRA on the tiny FLUX transformer's attention projections, in the diffusers-PEFT format."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe.transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="tiny")
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    layers = get_peft_model_state_dict(pipe.transformer, adapter_name="tiny")
    type(pipe).save_lora_weights(str(dst), transformer_lora_layers=layers, safe_serialization=True)
    pipe.transformer.delete_adapters("tiny")
    return Path(dst) / "pytorch_lora_weights.safetensors"
