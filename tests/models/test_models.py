"""Every registered model: forward/backward on tiny inputs and its parameter count recomputed by hand."""

import pytest
import torch
import torchvision

from vidpipe.errors import VidpipeError
from vidpipe.models import count_params, create_model, list_models, load_pretrained, model_entry
from vidpipe.models.registry import make_config, register_model

D, C = 64, 7  # input feature width, classes

TINY = {  # small options so every model runs in milliseconds
    "tsn_mean": {},
    "resnet_temporal_vit": {"dim": 32, "depth": 2, "heads": 4, "max_frames": 16},
    "temporal_retnet": {"dim": 32, "depth": 2, "heads": 4},
    "perceiver": {"num_latents": 4, "dim": 32, "heads": 4, "head_dim": 8, "cross_head_dim": 8, "cross_layers": 1, "self_layers": 1},
    "r2plus1d_18": {},
    "r2plus1d_perceiver": {"cnn_blocks": 4, "num_latents": 4, "dim": 32, "heads": 4, "head_dim": 8, "cross_head_dim": 8},
    "timesformer": {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "patch_size": 8, "image_size": 32, "frames": 8},
    "timesformer_retnet": {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "patch_size": 8, "image_size": 32, "frames": 8},
    "tsm_r50": {},
    "tin_r50": {},
    "squeezetime": {"frames": 8},
    "vivit_fe": {"dim": 32, "heads": 4, "mlp_dim": 64, "spatial_depth": 2, "temporal_depth": 1, "patch_size": 8, "image_size": 32, "frames": 8},
}


def tiny_input(name):
    kind = model_entry(name).input
    if kind == "frame_features":
        return torch.randn(2, 8, D)
    if kind == "clip_tokens":
        return torch.randn(2, 2, D, 2, 3, 3)
    return torch.randn(2, 3, 8, 32, 32)  # two clips: BatchNorm after global pooling (SqueezeTime) cannot train on one


def build(name, num_classes=C, **options):
    """A tiny model: feature models are told the feature width, clip models are not."""
    in_dim = None if model_entry(name).input == "clips" else D
    return create_model(name, num_classes=num_classes, in_dim=in_dim, options={**TINY[name], **options})


def test_every_model_has_tiny_options():
    assert set(list_models()) == set(TINY)


# What forward_features returns for tiny_input(name), written from each model's documented layout
# (not read off the model): per-frame features, tokens with a CLS, latents, or a 3D token map.
FEATURES = {
    "tsn_mean": (2, 8, D),  # the frame features themselves; the mean over time is the head's
    "resnet_temporal_vit": (2, 1 + 8, 32),  # CLS + one token per frame
    "temporal_retnet": (2, 8, 32),  # one output per frame (causal)
    "perceiver": (2, 1 + 4, 32),  # the CLS, then the latents
    "r2plus1d_18": (2, 512, 1, 2, 2),  # 8 x 32 x 32 clip -> T/8, H/16, W/16
    "r2plus1d_perceiver": (2, 1 + 4, 32),  # the Perceiver's CLS and latents, over the cut CNN's 128 x 4 x 8 x 8 map
    "timesformer": (2, 1 + 16 * 8, 32),  # the CLS, then 4 x 4 patches x 8 frames
    "timesformer_retnet": (2, 8 + 16 * 8, 32),  # causal: one CLS per frame, then the patches
    "squeezetime": (2, 2048, 1, 1),  # a 2D map: 32 x 32 input, stride 32
    "tsm_r50": (2, 8, 2048),  # each segment's pooled ResNet-50 features; the head averages the segments' logits
    "tin_r50": (2, 8, 2048),
    "vivit_fe": (2, 1 + 8 // 2, 32),  # the temporal encoder's CLS, then one token per tubelet index (t = 2)
}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_contract(name):
    model = build(name)
    x = tiny_input(name)
    assert model(x).shape == (x.shape[0], C)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == FEATURES[name]
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (x.shape[0], model.num_features)
        assert model.head.in_features == model.num_features  # the classifier reads the pre-logits
    model.train()
    logits = model(x)
    logits.sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "every parameter receives a gradient"


def test_every_model_declares_its_features():
    assert set(FEATURES) == set(list_models())


def _layer(dim, hidden):  # nn.TransformerEncoderLayer: in/out projections, two linears, two LayerNorms
    return (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim) + 4 * dim


def expected_params(name):
    o = make_config(name, TINY[name])
    if name == "tsn_mean":
        return 2 * D + D * C + C
    if name == "resnet_temporal_vit":
        return (D * o.dim + o.dim) + o.dim + (o.max_frames + 1) * o.dim + o.depth * _layer(o.dim, int(o.dim * o.mlp_ratio)) + 2 * o.dim + (o.dim * C + C)
    if name == "temporal_retnet":
        hidden = int(o.dim * o.ffn_ratio)
        block = 4 * o.dim + 5 * o.dim * o.dim + 2 * o.dim + (o.dim * hidden + hidden + hidden * o.dim + o.dim)
        return (D * o.dim + o.dim) + o.depth * block + 2 * o.dim + (o.dim * C + C)
    if name in ("perceiver", "r2plus1d_perceiver"):  # the study's head: Fourier positions (no parameters), latents, CLS
        d, ctx, f = o.dim, (D if name == "perceiver" else 128) + 3 * (2 * o.freq_bands + 1), o.ff_mult * o.dim
        geglu = 2 * d + (d * 2 * f + 2 * f) + (f * d + d)  # its pre-norm, then a linear to value and gate, and back
        inner, cross_inner = o.heads * o.head_dim, o.cross_heads * o.cross_head_dim
        cross = 2 * d + 2 * ctx + d * cross_inner + ctx * 2 * cross_inner + (cross_inner * d + d) + geglu
        self_layer = 2 * d + d * inner + d * 2 * inner + (inner * d + d) + geglu
        head = o.num_latents * d + d + o.cross_layers * (cross + o.self_layers * self_layer) + 2 * d + (d * C + C)
        if name == "perceiver":
            return head
        cnn = torchvision.models.video.r2plus1d_18()  # torchvision's network: the stem and its first 4 BasicBlocks
        return head + count_params(torch.nn.Sequential(cnn.stem, cnn.layer1, cnn.layer2))
    if name == "r2plus1d_18":
        return count_params(torchvision.models.video.r2plus1d_18(num_classes=C))  # torchvision's own network
    if name in ("timesformer", "timesformer_retnet"):
        d, h, patches = o.dim, o.mlp_dim, (o.image_size // o.patch_size) ** 2
        attention = 3 * d * d + 3 * d + d * d + d  # fused qkv and proj, with biases
        temporal = attention if name == "timesformer" else 5 * d * d + 2 * d  # retention: q, k, v, g, out (no biases), GroupNorm
        block = 2 * d + attention + 2 * d + (d * h + h + h * d + d) + 2 * d + temporal + (d * d + d)
        time = o.frames * d if name == "timesformer" else 0
        return (3 * o.patch_size**2 * d + d) + d + (patches + 1) * d + time + o.depth * block + 2 * d + (d * C + C)
    if name == "squeezetime":  # the documented 28,887,088 is at 16 frames (a 48-channel 5x5 stem), default pos_dim
        return 28_887_088 - 64 * 3 * (16 - o.frames) * 5 * 5 + (2048 * C + C)
    if name in ("tsm_r50", "tin_r50"):
        resnet = count_params(torchvision.models.resnet50(num_classes=C))  # torchvision's network, its fc the classifier
        if name == "tsm_r50":
            return resnet  # the shift has no parameters
        t = o.segments  # per block: OffsetNet Conv1d(F, 1, 3), Linear(T, T), Linear(T, 2); WeightNet Conv1d(F, 2, 3); F = in / 4
        inputs = [64, 256, 256, 256, 512, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 1024, 2048, 2048]
        return resnet + sum((3 * (c // o.shift_div) + 1) + (t * t + t) + (2 * t + 2) + (6 * (c // o.shift_div) + 2) for c in inputs)
    if name == "vivit_fe":
        d, h, patches, indices = o.dim, o.mlp_dim, (o.image_size // o.patch_size) ** 2, o.frames // o.tubelet
        block = 2 * d + (3 * d * d + 3 * d + d * d + d) + 2 * d + (d * h + h + h * d + d)
        spatial = d + (patches + 1) * d + o.spatial_depth * block + 2 * d  # CLS, positions, blocks, norm
        temporal = d + (indices + 1) * d + o.temporal_depth * block + 2 * d
        return (3 * o.tubelet * o.patch_size**2 * d + d) + spatial + temporal + (d * C + C)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
    assert count_params(build(name)) == expected_params(name)


def test_r2plus1d_18_has_31_5m_parameters_at_400_classes():
    assert round(count_params(build("r2plus1d_18", 400)) / 1e6, 1) == 31.5


def test_retnet_parallel_equals_recurrent_in_float64():
    model = build("temporal_retnet").double().eval()
    x = torch.randn(3, 11, D, dtype=torch.float64)
    torch.testing.assert_close(model.forward_features(x), model.forward_recurrent(x), rtol=0, atol=1e-10)
    # causal: the first 5 outputs do not depend on later frames
    y = x.clone()
    y[:, 5:] = torch.randn_like(y[:, 5:])
    torch.testing.assert_close(model.forward_features(x)[:, :5], model.forward_features(y)[:, :5], rtol=0, atol=1e-10)


def test_retnet_decays_follow_the_paper():
    msr = build("temporal_retnet").blocks[0].msr
    torch.testing.assert_close(msr.gamma, torch.tensor([1 - 2.0**-5, 1 - 2.0**-6, 1 - 2.0**-7, 1 - 2.0**-8]))


def test_tsn_mean_is_order_blind_and_temporal_vit_is_not():
    x = torch.randn(2, 8, D)
    perm = torch.randperm(8)
    tsn = build("tsn_mean").eval()
    torch.testing.assert_close(tsn(x), tsn(x[:, perm]))
    vit = build("resnet_temporal_vit").eval()
    assert not torch.allclose(vit(x), vit(x[:, perm]))


def test_registry_refuses_duplicates_and_unknowns():
    with pytest.raises(ValueError, match="already registered"):
        register_model("tsn_mean", object, "frame_features", "again")(lambda *a: None)
    with pytest.raises(VidpipeError, match="unknown model 'nope'.*tsn_mean"):
        create_model("nope", num_classes=C, in_dim=D)
    with pytest.raises(VidpipeError, match="no option"):
        build("tsn_mean", depth=3)


def test_builders_are_keyword_only_and_refuse_contradictions():
    with pytest.raises(TypeError):
        create_model("tsn_mean", C, D)  # positional num_classes / in_dim are refused
    with pytest.raises(VidpipeError, match="reads clips.*in_dim"):
        create_model("r2plus1d_18", num_classes=C, in_dim=D)
    with pytest.raises(VidpipeError, match="pass in_dim"):
        create_model("tsn_mean", num_classes=C)


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_offline_then_loads_a_checkpoint_saved_from_it(name, tmp_path, monkeypatch):
    """Built with no network and no files (any attempt to download fails the test), then loaded back
    through load_pretrained from a vidpipe checkpoint (feature heads) or a plain safetensors file."""
    from safetensors.torch import save_file

    from vidpipe.models import load_pretrained
    from vidpipe.models.weights import tensors_sha256

    def no_network(*a, **k):
        raise AssertionError("a model tried to download while being built")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    torch.manual_seed(0)
    model = build(name).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    meta = {}
    if model_entry(name).input != "clips":  # feature heads need their width: a vidpipe checkpoint records it
        meta = {"model": name, "config": {"model_options": TINY[name]}, "in_dim": D}
        meta = {k: __import__("json").dumps(v) for k, v in meta.items()} | {"tensors_sha256": tensors_sha256(state)}
    save_file(state, str(path), metadata=meta)
    loaded = load_pretrained(name, str(path), **({} if meta else TINY[name]))
    assert not loaded.training and loaded.pretrained["layout"] == "vidpipe" and loaded.pretrained["classifier"] == "kept"
    x = tiny_input(name)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    refit = load_pretrained(name, str(path), num_classes=3, **({} if meta else TINY[name]))
    assert refit(x).shape == (x.shape[0], 3) and refit.pretrained["classifier"].startswith("replaced")


def test_r2plus1d_loads_a_torchvision_state_dict_and_matches_torchvision(tmp_path):
    """A state dict in torchvision's own layout (stem, layer1-4, fc; saved as .pth) is mapped to
    vidpipe's keys; the loaded model's logits equal torchvision's r2plus1d_18 forward."""
    from vidpipe.models import load_pretrained

    torch.manual_seed(0)
    reference = torchvision.models.video.r2plus1d_18(num_classes=C).eval()
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(reference.state_dict(), path)
    model = load_pretrained("r2plus1d_18", str(path))
    assert model.pretrained["layout"] == "torchvision" and model.head.out_features == C
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_keys(tmp_path):
    from vidpipe.models import load_pretrained

    state = torchvision.models.video.r2plus1d_18().state_dict()
    state.pop("layer4.1.conv1.1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(VidpipeError, match=r"1 missing \(e.g. layers.3.1.conv1.1.weight\), 1 unexpected \(e.g. extra.weight\)"):
        load_pretrained("r2plus1d_18", str(tmp_path / "bad.pth"))
    with pytest.raises(VidpipeError, match="neither a weights tag of r2plus1d_18 \\(its tags: KINETICS400_V1\\)"):
        load_pretrained("r2plus1d_18", str(tmp_path / "missing.pth"))


def test_weights_records_carry_their_transforms():
    record = model_entry("r2plus1d_18").weights_record("KINETICS400_V1")
    tv = torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1
    preset = tv.transforms()
    t = record.transforms
    assert (t.crop, t.short_side) == (preset.crop_size[0], preset.resize_size[0])
    assert t.mean == tuple(preset.mean) and t.std == tuple(preset.std)
    assert record.meta["params"] == tv.meta["num_params"] and record.meta["top1"] == tv.meta["_metrics"]["Kinetics-400"]["acc@1"]
    assert record.num_classes == len(tv.meta["categories"])


def test_a_file_of_another_family_is_refused_with_its_keys_first(tmp_path):
    """A torchvision ResNet-50 given to r2plus1d_18: the keys that do not fit come first, not "pass num_classes"."""
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(VidpipeError) as e:
        load_pretrained("r2plus1d_18", str(tmp_path / "r50.pth"))
    message = str(e.value)
    assert message.index("as torchvision: 204 missing") < message.index("pass num_classes"), message
