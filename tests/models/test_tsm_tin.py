"""TSM and TIN against references nobody here wrote: torchvision's resnet50 (TSM with the shift off is a
TSN), naive loops over (n, t, c) for the shifts, autograd's gradcheck, and mmaction2 / original-repo
checkpoints built from their documented key lists."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, load_pretrained
from vidpipe.models.tin import TemporalInterlace, linear_sampler, tin_shift
from vidpipe.models.tsm import temporal_shift


def naive_shift(x, shifts):
    """out[n, t, c] = x[n, t - s, c] (zero outside [0, T)), s = shifts[n][group of c], by loops."""
    n, t, c = x.shape[:3]
    groups = len(shifts[0])
    out = torch.zeros_like(x)
    for i in range(n):
        for j in range(t):
            for k in range(c):
                src = j - int(shifts[i][k // (c // groups)])
                if 0 <= src < t:
                    out[i, j, k] = x[i, src, k]
    return out


def test_tsm_shift_moves_the_documented_folds():
    x = torch.randn(2 * 5, 16, 3, 3)  # B = 2, T = 5, C = 16, fold 2
    out = temporal_shift(x, 5, 2).view(2, 5, 16, 3, 3)
    ref = x.view(2, 5, 16, 3, 3)
    shifts = [[-1] * 1 + [1] * 1 + [0] * 6] * 2  # 8 groups of 2 channels: next frame, previous frame, unchanged
    torch.testing.assert_close(out, naive_shift(ref, shifts), rtol=0, atol=0)


def test_tsm_without_shift_is_torchvisions_resnet50_per_segment_averaged(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(num_classes=6).eval()
    torch.save(tv.state_dict(), tmp_path / "resnet50.pth")
    tsn = load_pretrained("tsm_r50", str(tmp_path / "resnet50.pth"), is_shift=False)
    assert tsn.pretrained["layout"] == "torchvision" and tsn.head.out_features == 6
    x = torch.randn(2, 3, 3, 64, 64)  # B = 2, T = 3
    with torch.no_grad():
        expected = torch.stack([tv(x[:, :, t]) for t in range(3)], 1).mean(1)
        torch.testing.assert_close(tsn(x), expected, atol=1e-5, rtol=0)
        tsm = load_pretrained("tsm_r50", str(tmp_path / "resnet50.pth"))  # the shift on: order now matters
        assert (tsm(x) - expected).abs().max() > 1e-3
        assert (tsm(x) - tsm(x[:, :, [2, 1, 0]])).abs().max() > 1e-3
        torch.testing.assert_close(tsn(x), tsn(x[:, :, [2, 1, 0]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t, shifts", [(4, [[1, -1], [0, 3]]), (5, [[-2, 2], [5, -7]])])
def test_tin_shift_against_a_loop(t, shifts):
    x = torch.randn(2, t, 6, 2, 3)
    torch.testing.assert_close(tin_shift(x, torch.tensor(shifts)), naive_shift(x, shifts), rtol=0, atol=0)


def test_fractional_shift_is_the_two_shift_interpolation():
    x = torch.randn(2, 6, 8, 3, dtype=torch.float64)
    offset = torch.tensor([[0.3, -1.75, 1.5, -0.2], [-1.99, 0.0, 1.01, 0.5]], dtype=torch.float64)
    expected = torch.zeros_like(x)
    for i in range(2):
        for g in range(4):
            o0 = math.floor(offset[i, g])
            a = offset[i, g].item() - o0
            channels = slice(2 * g, 2 * g + 2)
            lo = naive_shift(x[i:i + 1, :, channels], [[o0]])
            hi = naive_shift(x[i:i + 1, :, channels], [[o0 + 1]])
            expected[i, :, channels] = ((1 - a) * lo + a * hi)[0]
    torch.testing.assert_close(linear_sampler(x, offset), expected, rtol=0, atol=1e-12)


def test_the_gradient_is_the_adjoint_not_mmcvs_same_direction_shift():
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    shift = torch.tensor([[1, -2], [2, 0]])
    assert torch.autograd.gradcheck(lambda v: tin_shift(v, shift), (x,))
    g = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(tin_shift(x, shift), x, g)
    torch.testing.assert_close(grad, tin_shift(g, -shift), rtol=0, atol=0)  # the adjoint moves the gradient back
    assert (grad - tin_shift(g, shift)).abs().max() > 0.1  # mmcv's CUDA backward would move it forward again
    # the fractional sampler, in x and in the offsets (away from integers, where floor jumps)
    offset = torch.tensor([[0.3, -1.6], [1.2, -0.45]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_sampler, (x, offset))


def test_tin_with_integer_offsets_and_unit_weights_shifts_each_group_by_them():
    torch.manual_seed(0)
    t, c = 4, 32  # F = 8 interlaced channels: four groups of 2
    tin = TemporalInterlace(c, segments=t, shift_div=4).double()
    with torch.no_grad():
        tin.offset_net.fc2.weight.zero_()
        tin.offset_net.fc2.bias.copy_(torch.tensor([math.log(3), -math.log(3)], dtype=torch.float64))  # 4 (sigmoid - 0.5) = 1, -1
        tin.weight_net.conv.weight.zero_()  # 2 sigmoid(0) = 1
    x = torch.randn(2 * t, c, 3, 3, dtype=torch.float64)
    out = tin(x, t).view(2, t, c, 3, 3)
    ref = x.view(2, t, c, 3, 3)
    torch.testing.assert_close(out[:, :, :8], naive_shift(ref[:, :, :8], [[1, -1, -1, 1]] * 2), rtol=0, atol=1e-9)
    torch.testing.assert_close(out[:, :, 8:], ref[:, :, 8:], rtol=0, atol=0)


def test_backbone_parameter_counts_are_mmaction2s():
    for name, backbone in (("tsm_r50", 23_508_032), ("tin_r50", 23_539_040)):
        model = create_model(name, num_classes=400)
        assert sum(p.numel() for k, p in model.named_parameters() if k.startswith("backbone.")) == backbone
        assert sum(p.numel() for p in model.head.parameters()) == 2048 * 400 + 400


# ------------------------------------------------------------------ mmaction2 and original-repo checkpoints
def mmaction2_keys(model, tin: bool) -> dict:
    """The model's tensors under mmaction2's documented names (reference-facts: TSM and TIN key lists):
    ConvModule conv/bn pairs, the shifted conv1 under conv.net (TSM) or conv.net2 with the interlace in
    conv.net1 (TIN), downsample.conv/.bn, cls_head.fc_cls."""
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "head":
            out[f"cls_head.fc_cls.{parts[1]}"] = value
        elif parts[1] in ("conv1", "bn1"):  # the stem
            out[f"backbone.conv1.{'conv' if parts[1] == 'conv1' else 'bn'}.{parts[2]}"] = value
        else:
            layer, block, name, rest = parts[1], parts[2], parts[3], ".".join(parts[4:])
            b = f"backbone.{layer}.{block}"
            if name == "interlace":
                out[f"{b}.conv1.conv.net1.{rest}"] = value
            elif name == "downsample":
                out[f"{b}.downsample.{'conv' if parts[4] == '0' else 'bn'}.{parts[5]}"] = value
            elif name.startswith("bn"):
                out[f"{b}.conv{name[-1]}.bn.{rest}"] = value
            elif name == "conv1":
                out[f"{b}.conv1.conv.{'net2' if tin else 'net'}.{rest}"] = value
            else:
                out[f"{b}.{name}.conv.{rest}"] = value
    return out


@pytest.mark.parametrize("name", ["tsm_r50", "tin_r50"])
def test_mmaction2_checkpoints_load_and_a_wrong_one_fails_in_one_line(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    state = mmaction2_keys(model, name == "tin_r50")
    assert "backbone.layer1.0.conv1.conv." + ("net2" if name == "tin_r50" else "net") + ".weight" in state
    if name == "tin_r50":
        assert {"backbone.layer3.2.conv1.conv.net1.offset_net.fc2.bias", "backbone.layer3.2.conv1.conv.net1.weight_net.conv.weight"} <= set(state)
    torch.save({"meta": {"mmaction2_version": "1.2.0"}, "state_dict": state}, tmp_path / "mm.pth")
    loaded = load_pretrained(name, str(tmp_path / "mm.pth"))
    assert loaded.pretrained["layout"] == "mmaction2"
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    del state["backbone.layer2.1.conv2.conv.weight"]
    state["backbone.layer4.0.conv3.bn.weight"] = torch.zeros(7)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(VidpipeError) as e:
        load_pretrained(name, str(tmp_path / "bad.pth"))
    assert "1 missing (e.g. backbone.layer2.1.conv2.weight)" in str(e.value) and "backbone.layer4.0.bn3.weight (7,) vs (2048,)" in str(e.value)
    assert "\n" not in str(e.value)


def test_tin_starts_from_a_tsm_checkpoint_with_a_fresh_interlace(tmp_path):
    """mmaction2's TIN-K400 is fine-tuned from TSM-K400: a TSM checkpoint loads into TIN, the interlace
    taking TIN's own initialisation."""
    torch.manual_seed(0)
    tsm = create_model("tsm_r50", num_classes=5).eval()
    torch.save({"state_dict": mmaction2_keys(tsm, tin=False)}, tmp_path / "tsm.pth")
    tin = load_pretrained("tin_r50", str(tmp_path / "tsm.pth"))
    torch.testing.assert_close(tin.backbone.layer2[0].conv1.weight, tsm.backbone.layer2[0].conv1.weight, rtol=0, atol=0)
    assert tin.backbone.layer1[0].interlace.offset_net.fc2.bias.tolist() == pytest.approx([0.5108, 0.5108])


def test_original_tsm_repo_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("tsm_r50", num_classes=5).eval()
    state = {}
    for key, value in model.state_dict().items():  # mit-han-lab: module.base_model.* (shifted conv1 under .net), module.new_fc
        if key.startswith("head."):
            state["module.new_fc." + key.removeprefix("head.")] = value
            continue
        name = key.removeprefix("backbone.")
        if name.startswith("layer") and ".conv1." in name:
            name = name.replace(".conv1.", ".conv1.net.")
        state["module.base_model." + name] = value
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state}, tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth")
    loaded = load_pretrained("tsm_r50", str(tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth"))
    assert loaded.pretrained["layout"] == "official"
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_tin_refuses_another_segment_count_and_tags_name_the_download():
    model = create_model("tin_r50", num_classes=3)
    with pytest.raises(VidpipeError, match="takes exactly 8 segments.*got 4.*data.frames"):
        model(torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(VidpipeError, match="tin_imagenet-pretrained-r50_8xb6-1x1x8-40e_sthv2-rgb; download them"):
        load_pretrained("tin_r50", "SSV2")


def test_imagenet_tag_goes_through_the_weights_record(monkeypatch):
    """IMAGENET1K_V1 is torchvision's ResNet50_Weights (offline here: the record's fetch is given a local
    state dict); TIN takes it with its interlace at its own initialisation, the run's classifier fresh."""
    from vidpipe.models import init_from_pretrained
    from vidpipe.models.tsm import IMAGENET1K_V1

    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    monkeypatch.setattr(type(IMAGENET1K_V1), "fetch", lambda self: resnet.state_dict())
    model = create_model("tin_r50", num_classes=7)
    head = model.head.weight.clone()
    loaded = init_from_pretrained(model, "tin_r50", "IMAGENET1K_V1")
    assert loaded.layout == "torchvision" and loaded.transforms["crop"] == 224
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head.weight, head, rtol=0, atol=0)
    assert model.backbone.layer1[0].interlace.offset_net.fc2.bias.tolist() == pytest.approx([0.5108, 0.5108])


# ------------------------------------------------------------------ a tag's file kept locally (TAG=PATH)
@pytest.fixture(scope="module")
def k400_file(tmp_path_factory):
    """A TSM checkpoint in mmaction2's layout under the K400 tag's published name (no hash in it)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("k400") / "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.pth"
    torch.save({"meta": {"mmaction2_version": "1.2.0"}, "state_dict": mmaction2_keys(create_model("tsm_r50", num_classes=400), tin=False)}, path)
    return path


def test_a_tags_local_file_keeps_the_tags_transforms(k400_file, tmp_path):
    import shutil

    from vidpipe.data.build import model_transforms
    from vidpipe.models.registry import assumed_transforms
    from vidpipe.models.tsm import IMAGENET1K_V1
    from vidpipe.train.config import load_config

    tagged = load_pretrained("tsm_r50", f"K400={k400_file}")
    assert (tagged.pretrained["transforms"]["short_side"], tagged.pretrained["transforms"]["crop"]) == (256, 224)  # the tag's: 256 -> 224
    assert tagged.pretrained["source"] == f"K400={k400_file}" and tagged.pretrained["sha256"]
    bare = load_pretrained("tsm_r50", str(k400_file))
    assert (bare.pretrained["transforms"]["short_side"], bare.pretrained["transforms"]["crop"]) == (128, 112)  # the model's own
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tagged(x), bare(x), rtol=0, atol=0)  # the same weights either way
    for weights, crop in ((f"K400={k400_file}", 224), (str(k400_file), 112)):  # what a training run's data pipeline is given
        cfg = load_config(None, [f"init={weights}"], base={"model": "tsm_r50", "data": {"path": "unused"}})
        assert model_transforms(cfg).crop == crop
    assert "names no tag" in assumed_transforms("tsm_r50", str(k400_file)) and assumed_transforms("tsm_r50", f"K400={k400_file}") is None
    named = tmp_path / "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb_20220831-deadbeef.pth"
    shutil.copy(k400_file, named)  # a name that states another file's sha256
    with pytest.raises(VidpipeError, match="is not tsm_r50's K400 file: its sha256 starts .*, the published one deadbeef"):
        load_pretrained("tsm_r50", f"K400={named}")
    assert IMAGENET1K_V1.published_sha256() == "0676ba61"  # torchvision's resnet50-0676ba61.pth
    with pytest.raises(VidpipeError, match="K700 is not a weights tag of tsm_r50 .*IMAGENET1K_V1, K400"):
        load_pretrained("tsm_r50", f"K700={k400_file}")


@pytest.mark.slow
def test_a_run_from_a_tags_local_file_trains_and_predicts_with_its_transforms(k400_file, synth_h264, tmp_path):
    from vidpipe.datasets.adapters import build_manifest
    from vidpipe.predict import Predictor
    from vidpipe.stores.extract import ExtractConfig, extract
    from vidpipe.train.card import load_run
    from vidpipe.train.config import load_config
    from vidpipe.train.loop import train

    manifest = build_manifest("synthetic", synth_h264)
    manifest.records = [r for r in manifest.records if r.split == "test"][:1] + [r for r in manifest.records if r.split == "train"][:2]
    extract(manifest, tmp_path / "store", ExtractConfig(frames=8, size=32))  # three videos: ResNet-50 at 224 is slow on a CPU
    cfg = load_config(None, ["optim.epochs=1", "data.workers=0", "data.batch_size=2", "data.val_fraction=0", "device=cpu",
                             f"init=K400={k400_file}"], base={"model": "tsm_r50", "data": {"path": str(tmp_path / "store")}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    card = load_run(tmp_path / "run").card
    assert (card.input.augment["size"], card.input.augment["test_short_side"]) == (224, 256) and card.init["source"].startswith("K400=")
    predictor = Predictor.load(tmp_path / "run", device="cpu")
    assert predictor.transform.cfg.size == 224 and predictor.transform.cfg.test_short_side == 256
    video = next(iter(sorted((synth_h264 / "test").rglob("*.mp4"))))
    assert next(iter(predictor.predict_many([video]))).error is None
