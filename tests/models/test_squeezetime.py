"""SqueezeTime against its documented official structure: the channel order of the squeeze, the state
dict the official code builds (key list written here from the documented structure, not read off
vidpipe's model), and checkpoints in both official layouts."""

from __future__ import annotations

import pytest
import torch

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, load_pretrained

T = 16


def test_the_squeeze_puts_colour_c_of_frame_t_at_channel_c_times_T_plus_t():
    model = create_model("squeezetime", num_classes=3).eval()
    seen = []
    model.backbone.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    for c, t in ((0, 0), (1, 5), (2, 15)):
        x = torch.zeros(1, 3, T, 32, 32)
        x[0, c, t] = 1.0
        seen.clear()
        with torch.no_grad():
            model(x)
        lit = seen[0][0].flatten(1).abs().sum(1).nonzero().flatten().tolist()
        assert lit == [c * T + t]


def bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
            f"{prefix}.num_batches_tracked": ()}


def official_backbone_shapes(pos_dim=(56, 28, 14, 7)) -> dict:
    """The official `ResNet(Bottleneck, [3, 4, 6, 3])` state dict, from the documented structure."""
    shapes = {"conv1.weight": (64, 48, 5, 5), **bn("bn1", 64)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            c = f"{p}.conv2"
            shapes |= {f"{p}.conv1.weight": (planes, inplanes, 1, 1), **bn(f"{p}.bn1", planes),
                       f"{c}.param_conv.1.weight": (planes, planes, 1, 1), **bn(f"{c}.param_conv.2", planes),
                       f"{c}.param_conv.4.weight": (planes, planes, 1, 1), f"{c}.temporal_conv.weight": (planes, planes, 1, 1),
                       f"{c}.spatial_conv.pos_embed": (1, 16, pos_dim[stage - 1], pos_dim[stage - 1]),
                       f"{c}.spatial_conv.short_conv.weight": (planes, planes, 3, 3), f"{c}.spatial_conv.short_conv.bias": (planes,),
                       f"{c}.spatial_conv.glo_conv.0.weight": (16, planes, 3, 3), f"{c}.spatial_conv.glo_conv.0.bias": (16,),
                       **bn(f"{c}.spatial_conv.glo_conv.1", 16),
                       f"{c}.spatial_conv.glo_conv.3.weight": (16, 16, 7, 7), f"{c}.spatial_conv.glo_conv.3.bias": (16,),
                       **bn(f"{c}.spatial_conv.glo_conv.4", 16),
                       f"{c}.spatial_conv.glo_conv.6.weight": (planes, 16, 3, 3), f"{c}.spatial_conv.glo_conv.6.bias": (planes,),
                       **bn(f"{p}.bn2", planes), f"{p}.conv3.weight": (4 * planes, planes, 1, 1), **bn(f"{p}.bn3", 4 * planes)}
            if b == 0:
                shapes |= {f"{p}.shortcut_conv.0.weight": (4 * planes, inplanes, 1, 1), **bn(f"{p}.shortcut_conv.1", 4 * planes)}
                if stage > 1:  # strided: depthwise 2x2 stride-2 conv with bias, then BN
                    shapes |= {f"{p}.downsample.0.weight": (inplanes, 1, 2, 2), f"{p}.downsample.0.bias": (inplanes,),
                               **bn(f"{p}.downsample.1", inplanes)}
            inplanes = 4 * planes
    return shapes


def test_keys_shapes_and_parameter_count_are_the_official_ones():
    model = create_model("squeezetime", num_classes=400)
    backbone = {k.removeprefix("backbone."): tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert backbone == official_backbone_shapes()
    assert sum(p.numel() for p in model.backbone.parameters()) == 28_887_088
    assert sum(p.numel() for p in model.parameters()) == 28_887_088 + 2048 * 400 + 400  # 29.71 M with a 400-way head


def _trained_like(seed=0):
    """A random model whose BatchNorm statistics are not the defaults (so a loader that skips buffers fails)."""
    torch.manual_seed(seed)
    model = create_model("squeezetime", num_classes=5)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, T, 32, 32) * 2 + 0.5)
    return model.eval()


def test_both_official_layouts_load_strictly_with_batchnorm_statistics(tmp_path):
    model = _trained_like()
    state = model.state_dict()
    bare = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"state_dict": bare}, tmp_path / "squeezetime_bare.pth")
    recognizer = {("backbone.net." + k.removeprefix("backbone.") if k.startswith("backbone.") else "cls_head.fc_cls." + k.removeprefix("head.")): v
                  for k, v in state.items()}
    torch.save({"meta": {}, "state_dict": recognizer}, tmp_path / "squeezetime_mm.pth")
    x = torch.randn(2, 3, T, 32, 32)
    with torch.no_grad():
        mm = load_pretrained("squeezetime", str(tmp_path / "squeezetime_mm.pth"))
        assert mm.pretrained["layout"] == "mmaction2"
        torch.testing.assert_close(mm(x), model(x), rtol=0, atol=0)
        with pytest.raises(VidpipeError, match="no classifier.*pass num_classes"):
            load_pretrained("squeezetime", str(tmp_path / "squeezetime_bare.pth"))
        backbone = load_pretrained("squeezetime", str(tmp_path / "squeezetime_bare.pth"), num_classes=7)
        assert backbone.pretrained["layout"] == "official" and backbone.head.out_features == 7
        torch.testing.assert_close(backbone.forward_features(x), model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(backbone.backbone.layer3[2].bn2.running_var, model.backbone.layer3[2].bn2.running_var, rtol=0, atol=0)


@pytest.mark.parametrize("damage, says", [("rename", "1 missing (e.g. backbone.layer2.1.conv2.temporal_conv.weight)"),
                                          ("shape", "backbone.layer4.0.conv2.spatial_conv.pos_embed (1, 16, 5, 5) vs (1, 16, 7, 7)")])
def test_a_damaged_checkpoint_fails_in_one_line(tmp_path, damage, says):
    state = {"backbone.net." + k.removeprefix("backbone."): v for k, v in _trained_like().state_dict().items() if k.startswith("backbone.")}
    state |= {"cls_head.fc_cls.weight": torch.zeros(5, 2048), "cls_head.fc_cls.bias": torch.zeros(5)}
    if damage == "rename":
        state["backbone.net.layer2.1.conv2.temporal_kernel.weight"] = state.pop("backbone.net.layer2.1.conv2.temporal_conv.weight")
    else:
        state["backbone.net.layer4.0.conv2.spatial_conv.pos_embed"] = torch.zeros(1, 16, 5, 5)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(VidpipeError) as e:
        load_pretrained("squeezetime", str(tmp_path / "bad.pth"))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_another_frame_count_is_refused_in_one_line():
    with pytest.raises(VidpipeError, match="exactly 16 frames.*got 8.*data.frames"):
        create_model("squeezetime", num_classes=3)(torch.randn(1, 3, 8, 32, 32))
