"""TimeSformer against references nobody here wrote: Hugging Face transformers' TimesformerForVideoClassification
(same logits from its saved folder) and torchvision's vit_b_16 (the paper's ImageNet init, one frame)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, init_from_pretrained, load_pretrained
from vidpipe.models.timesformer import IMAGENET1K_V1

transformers = pytest.importorskip("transformers")


def _hf_folder(tmp_path, **overrides):
    """A tiny random TimesformerForVideoClassification saved as Hugging Face saves it."""
    torch.manual_seed(0)
    cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=128, num_labels=5, **overrides)
    hf = transformers.TimesformerForVideoClassification(cfg).eval()
    with torch.no_grad():  # HF leaves these at zero: give them values so the test sees them used
        for name, p in hf.named_parameters():
            if "time_embeddings" in name or "temporal_dense" in name:
                p.normal_(0, 0.05)
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


def test_same_logits_as_transformers(tmp_path):
    hf, folder = _hf_folder(tmp_path)
    model = load_pretrained("timesformer", str(folder))
    assert model.cfg.dim == 64 and model.cfg.depth == 2 and model.cfg.frames == 4 and model.pretrained["layout"] == "hf"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2)).logits  # HF takes (B, T, 3, H, W)
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
        # a larger input: HF's embeddings interpolate position embeddings (nearest); vidpipe's too
        big = torch.randn(1, 3, 4, 48, 48)
        tokens = model.embed(big)[0]
        assert tokens.shape == (1, 1 + 36 * 4, 64)


def test_space_only_folder_loads_as_the_frame_baseline(tmp_path):
    _, folder = _hf_folder(tmp_path, attention_type="space_only")
    model = load_pretrained("timesformer", str(folder))
    assert model.cfg.attention == "space_only" and not hasattr(model, "time_embed")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():  # the frame baseline: token outputs averaged over frames, so frame order does not matter
        torch.testing.assert_close(model(x), model(x[:, :, [2, 0, 3, 1]]), atol=1e-5, rtol=0)


def test_replacing_the_classifier_and_the_original_layout(tmp_path):
    hf, folder = _hf_folder(tmp_path)
    model = load_pretrained("timesformer", str(folder), num_classes=3)
    assert model.head.out_features == 3 and model.pretrained["classifier"].startswith("replaced (5 -> 3")
    kept = load_pretrained("timesformer", str(folder))
    official = {f"model.{k}": v for k, v in kept.state_dict().items()}  # facebookresearch's names: vidpipe's under model.
    torch.save({"model_state": None, "model": official}, tmp_path / "official.pyth")
    again = load_pretrained("timesformer", str(tmp_path / "official.pyth"), heads=4)  # its checkpoints carry no config
    assert again.pretrained["layout"] == "official"
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), kept(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("damage, says", [("missing", "1 missing (e.g. blocks.1.mlp.fc2.weight)"),
                                          ("extra", "unknown key timesformer.encoder.layer.0.extra.weight"),
                                          ("shape", "blocks.0.attn.proj.weight (64, 32) vs (64, 64)")])
def test_a_key_that_does_not_fit_is_one_line_naming_it(tmp_path, damage, says):
    _, folder = _hf_folder(tmp_path)
    state = load_file(folder / "model.safetensors")
    if damage == "missing":
        del state["timesformer.encoder.layer.1.output.dense.weight"]
    elif damage == "extra":
        state["timesformer.encoder.layer.0.extra.weight"] = torch.zeros(2)
    else:
        state["timesformer.encoder.layer.0.attention.output.dense.weight"] = torch.zeros(64, 32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(VidpipeError) as e:
        load_pretrained("timesformer", str(folder))
    assert says in str(e.value) and "\n" not in str(e.value)


def _vit_b_16(tmp_path):
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None).eval()
    torch.save(vit.state_dict(), tmp_path / "vit_b_16.pth")  # a local file in torchvision's layout
    return vit, tmp_path / "vit_b_16.pth"


@pytest.mark.slow
def test_imagenet_vit_init_on_one_frame_is_the_image_model(tmp_path):
    vit, path = _vit_b_16(tmp_path)
    model = create_model("timesformer", num_classes=10).eval()  # base preset: ViT-B/16, 8 frames
    loaded = init_from_pretrained(model, "timesformer", str(path))
    assert loaded.layout == "torchvision-vit"
    blocks = list(model.blocks)
    # the paper's init: temporal attention copied from spatial, time embeddings zero, temporal_fc zero but in block 0
    torch.testing.assert_close(blocks[3].temporal_attn.qkv.weight, blocks[3].attn.qkv.weight)
    assert model.time_embed.abs().sum() == 0 and blocks[1].temporal_fc.weight.abs().sum() == 0
    assert blocks[0].temporal_fc.weight.abs().sum() > 0  # the original code leaves block 0's random
    with torch.no_grad():
        blocks[0].temporal_fc.weight.zero_()  # then the network is exactly the image model on every frame
        x = torch.randn(2, 3, 1, 224, 224)
        tokens = vit._process_input(x[:, :, 0])
        expected = vit.encoder(torch.cat([vit.class_token.expand(2, -1, -1), tokens], 1))  # (B, 197, 768), final LN included
        torch.testing.assert_close(model.forward_features(x), expected, atol=1e-5, rtol=0)


def test_imagenet_tag_goes_through_the_weights_record(tmp_path, monkeypatch):
    """IMAGENET1K_V1 fetches torchvision's ViT_B_16 weights (offline here: the record's fetch is given a
    local state dict), converted by the same layout as a local file."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    monkeypatch.setattr(type(IMAGENET1K_V1), "fetch", lambda self: vit.state_dict())
    model = create_model("timesformer", num_classes=7, options=dict(dim=64, depth=2, heads=4, mlp_dim=128, patch_size=8, image_size=32, frames=16))
    loaded = init_from_pretrained(model, "timesformer", "IMAGENET1K_V1")
    assert loaded.layout == "torchvision-vit" and model.time_embed.shape == (1, 16, 64)  # resized to the run's frame count
    torch.testing.assert_close(model.patch_embed.proj.weight, vit.conv_proj.weight)
    assert model.head.out_features == 7


def test_frames_and_sizes_other_than_the_checkpoints(tmp_path):
    _, folder = _hf_folder(tmp_path)
    model = create_model("timesformer", num_classes=5, options=dict(dim=64, depth=2, heads=4, mlp_dim=128, patch_size=8, image_size=32, frames=8))
    init_from_pretrained(model, "timesformer", str(folder))  # a 4-frame checkpoint into an 8-frame model: time embeddings resized
    kept = load_pretrained("timesformer", str(folder))
    torch.testing.assert_close(model.time_embed, torch.repeat_interleave(kept.time_embed, 2, dim=1))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 40, 56)).shape == (1, 5)  # non-square, 5 x 7 patches


def test_base_has_the_reference_parameter_count():
    with torch.device("meta"):  # shapes only
        model = create_model("timesformer", num_classes=400)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 121.57  # TimeSformer-base, 8 x 224, 400 classes


def test_imagenet_record_matches_torchvisions_own():
    import torchvision

    tv = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1
    preset = tv.transforms()
    t = IMAGENET1K_V1.transforms
    assert IMAGENET1K_V1.meta["params"] == tv.meta["num_params"] and IMAGENET1K_V1.num_classes == len(tv.meta["categories"])
    assert t.crop == preset.crop_size[0] and t.mean == tuple(preset.mean) and t.std == tuple(preset.std)
