"""ViViT factorised encoder against image models nobody here wrote: at the "central frame" init a static
video's per-index spatial CLS is the image model's own CLS output (torchvision vit_b_16, timm
deit_tiny_patch16_224, Hugging Face ViTModel), and the factorised structure holds."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, init_from_pretrained, load_pretrained

timm = pytest.importorskip("timm")


def _static(image: torch.Tensor, frames: int) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3, T, H, W), every frame the image
    return image[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


def _cls_output(vit_model, head: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The image model's own forward, its CLS output read where it enters the classifier."""
    seen = []
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        vit_model(image)
    handle.remove()
    return seen[0]


@pytest.mark.slow
def test_torchvision_vit_b_16_init_static_video_is_the_image_model(tmp_path):
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None).eval()
    torch.save(vit.state_dict(), tmp_path / "vit_b_16.pth")
    model = create_model("vivit_fe", num_classes=10, options={"frames": 4}).eval()  # base preset, t = 2: 2 temporal indices
    loaded = init_from_pretrained(model, "vivit_fe", str(tmp_path / "vit_b_16.pth"))
    assert loaded.layout == "torchvision-vit"
    image = torch.randn(2, 3, 224, 224)
    expected = _cls_output(vit, vit.heads, image)  # (2, 768)
    with torch.no_grad():
        per_index = model.spatial_cls(_static(image, 4))  # (2, 2, 768)
        torch.testing.assert_close(per_index, expected[:, None].expand(-1, 2, -1), atol=1e-5, rtol=0)
        assert model(_static(image, 4)).abs().max() == 0  # the head starts at zero


@pytest.mark.parametrize("spatial_depth", [12, 4])
def test_timm_deit_tiny_init_static_video_is_the_image_model(tmp_path, spatial_depth):
    """Full depth: the image model itself. The Mini-ViViT (4 blocks): timm's DeiT-Tiny built with depth 4
    and given the checkpoint's first 4 blocks."""
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    torch.save(deit.state_dict(), tmp_path / "deit_tiny.pth")
    model = create_model("vivit_fe", num_classes=10, options={"preset": "tiny", "spatial_depth": spatial_depth, "frames": 8}).eval()
    assert init_from_pretrained(model, "vivit_fe", str(tmp_path / "deit_tiny.pth")).layout == "timm-vit"
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=spatial_depth).eval()
    reference.load_state_dict({k: v for k, v in deit.state_dict().items()
                               if not k.startswith("blocks.") or int(k.split(".")[1]) < spatial_depth})  # strict
    image = torch.randn(2, 3, 224, 224)
    expected = _cls_output(reference, reference.head, image)  # (2, 192)
    with torch.no_grad():
        torch.testing.assert_close(model.spatial_cls(_static(image, 8)), expected[:, None].expand(-1, 4, -1), atol=1e-5, rtol=0)


def test_hugging_face_vit_folder_init(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, layer_norm_eps=1e-6)
    hf = transformers.ViTModel(cfg).eval()  # with its pooler, no classifier
    hf.save_pretrained(tmp_path / "vit")
    options = dict(dim=64, heads=4, mlp_dim=128, spatial_depth=2, temporal_depth=1, patch_size=8, image_size=32, frames=4)
    with pytest.raises(VidpipeError, match="no classifier.*pass num_classes"):
        load_pretrained("vivit_fe", str(tmp_path / "vit"), **options)
    model = load_pretrained("vivit_fe", str(tmp_path / "vit"), num_classes=3, **options)
    assert model.pretrained["layout"] == "hf-vit" and model.head.out_features == 3
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=image).last_hidden_state[:, 0]
        torch.testing.assert_close(model.spatial_cls(_static(image, 4)), expected[:, None].expand(-1, 2, -1), atol=1e-5, rtol=0)


def _tiny_from_deit(tmp_path, **options):
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    torch.save(deit.state_dict(), tmp_path / "deit.pth")
    model = create_model("vivit_fe", num_classes=4, options={"preset": "tiny", "spatial_depth": 2, "image_size": 32, **options}).eval()
    init_from_pretrained(model, "vivit_fe", str(tmp_path / "deit.pth"))
    return deit, model


def test_only_each_tubelets_central_frame_counts_at_init(tmp_path):
    deit, model = _tiny_from_deit(tmp_path, frames=4)
    kernel = model.patch_embed.proj.weight  # (192, 3, 2, 16, 16)
    assert kernel[:, :, 0].abs().max() == 0
    torch.testing.assert_close(kernel[:, :, 1], deit.patch_embed.proj.weight, rtol=0, atol=0)
    a, b, c, d = torch.randn(4, 1, 3, 32, 32)
    clip = torch.stack([a, b, c, d], 2)  # tubelets (a, b) and (c, d): t // 2 = 1 picks b and d
    with torch.no_grad():
        per_index = model.spatial_cls(clip)[0]
        torch.testing.assert_close(per_index[0], _cls_output(deit, deit.head, b)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(per_index[1], _cls_output(deit, deit.head, d)[0], atol=1e-5, rtol=0)
        other = torch.stack([torch.randn_like(a), b, torch.randn_like(c), d], 2)  # the other frame of each tubelet changed
        torch.testing.assert_close(model.spatial_cls(other), model.spatial_cls(clip), atol=0, rtol=0)


def test_factorised_structure_each_index_alone_and_the_temporal_encoder_sees_order():
    torch.manual_seed(0)
    model = create_model("vivit_fe", num_classes=5, options={"preset": "tiny", "spatial_depth": 2, "temporal_depth": 2, "image_size": 32,
                                                             "frames": 8}).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # zero at init: give it values so logits differ
    x = torch.randn(2, 3, 8, 32, 32)
    order = [3, 0, 2, 1]  # tubelet order
    frames = torch.tensor([[2 * i, 2 * i + 1] for i in order]).flatten()  # each tubelet's two frames kept together
    with torch.no_grad():
        # the spatial encoder sees each temporal index alone: reordering the tubelets reorders its outputs, nothing else
        torch.testing.assert_close(model.spatial_cls(x[:, :, frames]), model.spatial_cls(x)[:, order], atol=1e-5, rtol=0)
        # the temporal encoder sees order
        assert (model(x[:, :, frames]) - model(x)).abs().max() > 1e-3


def test_image_model_checks_are_one_line(tmp_path):
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2)
    torch.save(deit.state_dict(), tmp_path / "deit.pth")
    too_deep = create_model("vivit_fe", num_classes=4, options={"preset": "tiny", "image_size": 32})  # 4 spatial blocks > 2
    with pytest.raises(VidpipeError, match="has 2 blocks; this ViViT's spatial encoder needs 4") as e:
        init_from_pretrained(too_deep, "vivit_fe", str(tmp_path / "deit.pth"))
    assert "\n" not in str(e.value)
    base = create_model("vivit_fe", num_classes=4, options={"image_size": 32, "spatial_depth": 2})  # 768 wide: not DeiT-Tiny
    with pytest.raises(VidpipeError, match=r"of another shape \(e.g. .*\(192,\) vs \(768,\)") as e:
        init_from_pretrained(base, "vivit_fe", str(tmp_path / "deit.pth"))
    assert "\n" not in str(e.value)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=2)
    torch.save(distilled.state_dict(), tmp_path / "distilled.pth")
    with pytest.raises(VidpipeError, match="distilled DeiT"):
        init_from_pretrained(create_model("vivit_fe", num_classes=4, options={"preset": "tiny", "image_size": 32, "spatial_depth": 2}),
                             "vivit_fe", str(tmp_path / "distilled.pth"))


def test_vidpipe_checkpoint_round_trip_and_other_sizes(tmp_path):
    _, model = _tiny_from_deit(tmp_path, frames=8)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    save_file(model.state_dict(), tmp_path / "vivit.safetensors")
    options = dict(preset="tiny", spatial_depth=2, image_size=32, frames=8)
    again = load_pretrained("vivit_fe", str(tmp_path / "vivit.safetensors"), **options)
    assert again.pretrained["layout"] == "vidpipe"
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
        # the same weights for 16 frames at 64: position embeddings interpolate, in the state and in the forward
        bigger = load_pretrained("vivit_fe", str(tmp_path / "vivit.safetensors"), **{**options, "frames": 16, "image_size": 64})
        assert bigger.temporal.pos_embed.shape[1] == 9 and bigger.spatial.pos_embed.shape[1] == 17
        torch.testing.assert_close(bigger(torch.randn(1, 3, 16, 64, 64)).shape, torch.Size([1, 4]))
        torch.testing.assert_close(model(torch.randn(1, 3, 16, 64, 64)).shape, torch.Size([1, 4]))
    with pytest.raises(VidpipeError, match="multiple of 2 frames"):
        model(torch.randn(1, 3, 5, 32, 32))


def test_weights_tags_name_the_download(monkeypatch, tmp_path):
    """DEIT_TINY_IN1K comes from the Hub (offline here: the error says to pass the file); IMAGENET1K_V1
    from torchvision (its fetch given a local state dict), converted by the same layout as a file."""
    import torchvision

    from vidpipe.models.vivit import IMAGENET1K_V1

    model = create_model("vivit_fe", num_classes=4, options={"preset": "tiny"})
    with pytest.raises(VidpipeError, match="timm/deit_tiny_patch16_224.fb_in1k; download them and pass the local file"):
        init_from_pretrained(model, "vivit_fe", "DEIT_TINY_IN1K")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    monkeypatch.setattr(type(IMAGENET1K_V1), "fetch", lambda self: vit.state_dict())
    small = create_model("vivit_fe", num_classes=4, options=dict(dim=64, heads=4, mlp_dim=128, spatial_depth=2, temporal_depth=1,
                                                                   image_size=32, frames=4))
    loaded = init_from_pretrained(small, "vivit_fe", "IMAGENET1K_V1")
    assert loaded.layout == "torchvision-vit" and loaded.transforms["crop"] == 224
    torch.testing.assert_close(small.spatial.pos_embed, vit.encoder.pos_embedding, rtol=0, atol=0)


def test_an_image_models_classifier_is_never_reported_as_kept(tmp_path):
    """An image ViT with its 1000-way head: ViViT drops that head and its own (zero) one would answer 0 for
    everything, so without num_classes the load is refused; with it, the record says the head is fresh."""
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    torch.save(deit.state_dict(), tmp_path / "deit.pth")
    options = {"preset": "tiny", "spatial_depth": 2, "image_size": 32, "frames": 4}
    with pytest.raises(VidpipeError, match="holds no classifier for vivit_fe .*pass num_classes"):
        load_pretrained("vivit_fe", str(tmp_path / "deit.pth"), **options)
    model = load_pretrained("vivit_fe", str(tmp_path / "deit.pth"), num_classes=5, **options)
    assert model.head.out_features == 5 and model.pretrained["classifier"] == "none in the checkpoint: a fresh 5-class classifier"
