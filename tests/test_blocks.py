"""Block ids across key formats, and the per-block strength sums."""

import math

import pytest

from audit.blocks import block_of, summarise
from audit.record import LayerRecord


@pytest.mark.parametrize("component,module,flux,expected", [
    ("unet", "down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", False, "down.1"),
    ("unet", "down_blocks.2.attentions.1.proj_in", False, "down.2"),
    ("unet", "mid_block_attentions_0_proj_out", False, "mid"),
    ("unet", "up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2", False, "up.3"),
    # sd-scripts SDXL SGM names: input_blocks 4,5 are level 1; 7,8 level 2; output 0-2 level 0
    ("unet", "input_blocks_4_1_transformer_blocks_0_attn1_to_q", False, "down.1"),
    ("unet", "input_blocks_8_1_transformer_blocks_9_ff_net_2", False, "down.2"),
    ("unet", "middle_block_1_transformer_blocks_3_attn2_to_v", False, "mid"),
    ("unet", "output_blocks_2_1_transformer_blocks_0_attn1_to_q", False, "up.0"),
    ("unet", "output_blocks_5_1_proj_in", False, "up.1"),
    ("unet", "input_blocks_0_0", False, "unet.other"),
    ("unet", "time_embed_0", False, "unet.other"),
    ("te1", "text_model_encoder_layers_0_self_attn_q_proj", False, "te1"),
    ("transformer", "double_blocks_7_img_attn_qkv", True, "double.7"),
    ("transformer", "single_blocks_37_linear1", True, "single.37"),
    ("transformer", "transformer_blocks.3.attn.to_q", True, "double.3"),
    ("transformer", "single_transformer_blocks.0.proj_out", True, "single.0"),
    ("transformer", "transformer_blocks.3.attn.to_q", False, "block.3"),
    ("transformer", "joint_blocks_12_x_block_attn_qkv", False, "block.12"),
    ("transformer", "blocks.39.self_attn.q", False, "block.39"),
    ("transformer", "layers_5_attention_qkv", False, "block.5"),
    ("transformer", "img_in", True, "other"),
])
def test_block_ids(component, module, flux, expected):
    assert block_of(component, module, flux_like=flux)[0] == expected


def layer(block, fro, spectral, basis="exact", kind="lora"):
    return LayerRecord(key=f"x:{block}{fro}", component="unet", module="m", block=block, kind=kind, format="kohya",
                       tensors=[], out_features=1, in_features=1, kernel=[], rank=1, alpha=None, scale=1.0,
                       scale_rule="r", delta_basis=basis, fro=fro, spectral=spectral)


def test_summarise_sums_energy_by_hand():
    rows = summarise([layer("down.0", 3.0, 2.0), layer("down.0", 4.0, 3.5), layer("mid", 5.0, 1.0),
                      layer("mid", 100.0, 100.0, basis="relative", kind="oft")])
    by = {b.id: b for b in rows}
    assert [b.id for b in rows] == ["down.0", "mid"]
    assert by["down.0"].strength == pytest.approx(5.0)  # sqrt(9 + 16)
    assert by["mid"].strength == pytest.approx(5.0)  # the relative (OFT) layer is not an absolute delta
    assert by["down.0"].energy_share == pytest.approx(0.5)
    assert by["down.0"].max_spectral == 3.5
    assert by["mid"].layers == 2 and by["mid"].kinds == {"lora": 1, "oft": 1}
    assert math.isclose(sum(b.energy_share for b in rows), 1.0)
