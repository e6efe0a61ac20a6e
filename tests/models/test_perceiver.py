"""The R(2+1)D study's Perceiver head and the end-to-end R(2+1)D + Perceiver, against lucidrains'
perceiver-pytorch (the modules the study's code is made of), torchvision's R(2+1)D-18 and the study's
parameter table."""

import pytest
import torch
import torchvision

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, load_pretrained
from vidpipe.models.perceiver import Perceiver, PerceiverConfig, fourier_positions

perceiver_pytorch = pytest.importorskip("perceiver_pytorch.perceiver_pytorch")


def test_fourier_positions_equal_perceiver_pytorch():
    sizes = (2, 7, 5)
    axes = [torch.linspace(-1.0, 1.0, n) for n in sizes]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    reference = perceiver_pytorch.fourier_encode(pos, 10.0, 6).flatten(-2).reshape(-1, 39)  # (t, h, w) order, axis-major
    assert torch.equal(fourier_positions(sizes, 6, 10.0), reference)


def _study_counts(cfg: PerceiverConfig) -> int:
    return sum(p.numel() for p in Perceiver(cfg, 51, 512).parameters())


def test_parameter_counts_reproduce_the_study_table():
    """HMDB51 (51 classes), 512 input channels: the study's "attention params" column."""
    assert round(_study_counts(PerceiverConfig(cross_layers=1, self_layers=1)) / 1e6, 2) == 7.65
    assert round(_study_counts(PerceiverConfig(cross_layers=1, self_layers=2)) / 1e6, 2) == 11.85
    assert round(_study_counts(PerceiverConfig(cross_layers=1, self_layers=6)) / 1e6, 2) == 28.66
    assert round(_study_counts(PerceiverConfig(cross_layers=0, self_layers=1)) / 1e6, 2) == 4.23
    # cross only: the study's 3.42 M is the latents, cross-attention and feed-forward; the classifier that
    # reads their mean (LayerNorm 512 + Linear 512 -> 51: 27,187) makes 3.45 M
    cross_only = Perceiver(PerceiverConfig(cross_layers=1, self_layers=0), 51, 512)
    classifier = sum(p.numel() for m in (cross_only.norm, cross_only.head) for p in m.parameters())
    assert classifier == 2 * 512 + 512 * 51 + 51
    assert round((_study_counts(PerceiverConfig(cross_layers=1, self_layers=0)) - classifier) / 1e6, 2) == 3.42


@pytest.mark.parametrize("blocks,params", [(4, 1.93), (6, 7.80), (7, 17.14), (8, 31.30)])
def test_cut_cnn_parameter_counts(blocks, params):
    model = create_model("r2plus1d_perceiver", num_classes=51, options={"cnn_blocks": blocks, "num_latents": 4, "self_layers": 0})
    assert round(model.cnn_parameters() / 1e6, 2) == params


def _reference(in_dim, cfg: PerceiverConfig, num_classes=5):
    """lucidrains' Perceiver with the study's settings (1 cross layer, `self_layers` self layers after it)."""
    torch.manual_seed(1)
    return perceiver_pytorch.Perceiver(num_freq_bands=cfg.freq_bands, depth=1, max_freq=cfg.max_freq, input_channels=in_dim, input_axis=3,
                                       num_latents=cfg.num_latents, latent_dim=cfg.dim, cross_heads=cfg.cross_heads, cross_dim_head=cfg.cross_head_dim,
                                       latent_heads=cfg.heads, latent_dim_head=cfg.head_dim, num_classes=num_classes,
                                       self_per_cross_attn=cfg.self_layers).eval()


def _ours_from(reference, cfg, in_dim, num_classes=5) -> Perceiver:
    """Our model with the reference's weights, renamed by hand from perceiver-pytorch's module names."""
    theirs = reference.state_dict()
    names = {"latents": "latents", "to_logits.1": "norm", "to_logits.2": "head", "layers.0.cross_attn.norm": "cross.0.norm",
             "layers.0.cross_attn.norm_context": "cross.0.norm_context", "layers.0.cross_attn.fn": "cross.0.attn",
             "layers.0.cross_ff.norm": "cross.0.ff_norm", "layers.0.cross_ff.fn.net.0": "cross.0.ff.fc1", "layers.0.cross_ff.fn.net.2": "cross.0.ff.fc2"}
    for i in range(cfg.self_layers):
        names.update({f"layers.0.self_attns.{i}.0.norm": f"layers.0.{i}.norm", f"layers.0.self_attns.{i}.0.fn": f"layers.0.{i}.attn",
                      f"layers.0.self_attns.{i}.1.norm": f"layers.0.{i}.ff_norm", f"layers.0.self_attns.{i}.1.fn.net.0": f"layers.0.{i}.ff.fc1",
                      f"layers.0.self_attns.{i}.1.fn.net.2": f"layers.0.{i}.ff.fc2"})
    ours = Perceiver(cfg, num_classes, in_dim).eval()
    state = {}
    for key, value in theirs.items():
        prefix = max((p for p in names if key == p or key.startswith(p + ".")), key=len)
        state[names[prefix] + key[len(prefix):]] = value
    if ours.cls is not None:
        state["cls"] = torch.randn(1, 1, cfg.dim)
    ours.load_state_dict(state, strict=True)
    return ours


CFG = dict(num_latents=16, dim=64, cross_head_dim=16, heads=4, head_dim=16)


def test_cross_only_equals_perceiver_pytorch():
    """Cross only is lucidrains' Perceiver with no self layers: mean of the latents, LayerNorm, linear."""
    cfg, in_dim = PerceiverConfig(self_layers=0, **CFG), 24
    reference = _reference(in_dim, cfg)
    ours = _ours_from(reference, cfg, in_dim)
    x = torch.randn(2, in_dim, 3, 5, 4)  # (B, C, T, H, W)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x.permute(0, 2, 3, 4, 1)), atol=1e-5, rtol=1e-5)


def test_cross_and_self_layers_equal_perceiver_pytorchs_modules_with_a_cls():
    """1 cross + 2 self: perceiver-pytorch's cross and self modules, with the study's CLS prepended to the
    latents before the self layers and its classifier (LayerNorm, linear) on the CLS."""
    cfg, in_dim = PerceiverConfig(self_layers=2, **CFG), 24
    reference = _reference(in_dim, cfg)
    ours = _ours_from(reference, cfg, in_dim)
    x = torch.randn(2, in_dim, 3, 5, 4)
    with torch.no_grad():
        data = x.permute(0, 2, 3, 4, 1)
        axes = [torch.linspace(-1.0, 1.0, n) for n in data.shape[1:4]]
        pos = perceiver_pytorch.fourier_encode(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1), cfg.max_freq, cfg.freq_bands)
        context = torch.cat([data, pos.flatten(-2).expand(2, -1, -1, -1, -1)], -1).flatten(1, 3)
        block, z = reference.layers[0], reference.latents.expand(2, -1, -1)
        z = block.cross_attn(z, context=context) + z
        z = block.cross_ff(z) + z
        z = torch.cat([ours.cls.expand(2, -1, -1), z], 1)
        for attn, ff in block.self_attns:
            z = attn(z) + z
            z = ff(z) + z
        torch.testing.assert_close(ours.forward_features(x), z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x), reference.to_logits[2](reference.to_logits[1](z[:, 0])), atol=1e-5, rtol=1e-5)


def test_self_only_attends_over_the_tokens_with_a_cls():
    cfg = PerceiverConfig(cross_layers=0, self_layers=1, dim=32, heads=4, head_dim=8)
    ours = Perceiver(cfg, 5, 32).eval()
    block = perceiver_pytorch.PerceiverBlock(dim=32, latent_heads=4, latent_dim_head=8, self_per_cross_attn=1, has_cross_attn=False).eval()
    state = {k.replace("self_attns.0.0.fn.", "attn.").replace("self_attns.0.0.norm.", "norm.").replace("self_attns.0.1.norm.", "ff_norm.")
             .replace("self_attns.0.1.fn.net.0.", "ff.fc1.").replace("self_attns.0.1.fn.net.2.", "ff.fc2."): v for k, v in block.state_dict().items()}
    ours.layers[0][0].load_state_dict(state, strict=True)
    x = torch.randn(2, 32, 2, 3, 3)
    with torch.no_grad():
        expected = block(torch.cat([ours.cls.expand(2, -1, -1), x.flatten(2).transpose(1, 2)], 1))
        torch.testing.assert_close(ours.forward_features(x), expected, atol=1e-5, rtol=1e-5)
    assert not hasattr(ours, "latents")  # nothing the model does not use


def test_token_store_head_lays_clips_end_to_end_in_time():
    """`perceiver` on a token store: (B, clips, C, t, h, w) is the map (B, C, clips x t, h, w)."""
    model = create_model("perceiver", num_classes=5, in_dim=16, options=CFG).eval()
    plain = Perceiver(model.cfg, 5, 16).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x.transpose(1, 2).reshape(2, 16, 6, 3, 3)))


def test_kinetics_cnn_loads_cut_and_the_map_equals_torchvisions(tmp_path):
    """A torchvision r2plus1d_18 state dict initialises the CNN: the token map at cnn_blocks=6 is torchvision's
    stem, layer1, layer2, layer3; at 7, one more block (layer4.0)."""
    torch.manual_seed(0)
    reference = torchvision.models.video.r2plus1d_18().eval()
    torch.save(reference.state_dict(), tmp_path / "r2plus1d_18.pth")
    model = load_pretrained("r2plus1d_perceiver", str(tmp_path / "r2plus1d_18.pth"), num_classes=7, cnn_blocks=6, **CFG)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = reference.layer3(reference.layer2(reference.layer1(reference.stem(x))))
        torch.testing.assert_close(model.blocks(model.stem(x)), expected)
        model7 = load_pretrained("r2plus1d_perceiver", str(tmp_path / "r2plus1d_18.pth"), num_classes=7, cnn_blocks=7, **CFG)
        torch.testing.assert_close(model7.blocks(model7.stem(x)), reference.layer4[0](expected))
    assert model(x).shape == (1, 7)
    with pytest.raises(VidpipeError, match="cnn_blocks must be 4..8"):
        create_model("r2plus1d_perceiver", num_classes=7, options={"cnn_blocks": 3})


def test_every_parameter_is_in_the_optimizer_and_trains():
    """The study's code made its cross-attention on the first forward, after the optimizer: here every
    parameter exists at build time, is in the trainer's parameter groups once, and moves in one step."""
    from vidpipe.train.loop import param_groups

    torch.manual_seed(0)
    model = create_model("r2plus1d_perceiver", num_classes=4, options={"cnn_blocks": 4, **CFG})
    grouped = [p for g in param_groups(model, 0.05) for p in g["params"]]
    assert sorted(map(id, grouped)) == sorted(id(p) for p in model.parameters())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 32, 32)), torch.tensor([0, 3])).backward()
    optimizer.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged, unchanged
