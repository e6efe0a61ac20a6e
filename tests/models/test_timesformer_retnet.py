"""The TimeSformer/RetNet hybrid: retention's three forms agree, streaming equals the parallel causal
model frame by frame, and TimeSformer checkpoints load with the documented key mapping."""

from __future__ import annotations

import pytest
import torch

from vidpipe.errors import VidpipeError
from vidpipe.models import create_model, init_from_pretrained, load_pretrained
from vidpipe.models.retnet import MultiScaleRetention

TINY = dict(dim=64, depth=2, heads=4, mlp_dim=128, patch_size=8, image_size=32, frames=4)


def test_three_forms_of_retention_agree_in_float64():
    torch.manual_seed(0)
    msr = MultiScaleRetention(32, 4).double()
    x = torch.randn(3, 29, 32, dtype=torch.float64)
    parallel = msr(x)
    for chunk in (1, 5, 8, 29, 64):
        torch.testing.assert_close(msr.forward_chunkwise(x, chunk), parallel, rtol=0, atol=1e-10)
    state, outs = None, []
    for n in range(x.shape[1]):
        y, state = msr.forward_step(x[:, n : n + 1], n, state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), parallel, rtol=0, atol=1e-10)
    # and it is causal: the future does not reach the past
    changed = x.clone()
    changed[:, 20:] += 1
    torch.testing.assert_close(msr(changed)[:, :20], parallel[:, :20], rtol=0, atol=1e-12)


def _model(**options):
    torch.manual_seed(0)
    model = create_model("timesformer_retnet", num_classes=5, options={**TINY, **options}).eval()
    with torch.no_grad():  # temporal_fc starts at zero past block 0: give every block a temporal path to check
        for block in model.blocks:
            torch.nn.init.normal_(block.temporal_fc.weight, std=0.05)
    return model


def test_streaming_logits_equal_the_parallel_causal_model_after_every_frame():
    model = _model()
    x = torch.randn(2, 3, 7, 32, 32)
    session = model.stream()
    with torch.no_grad():
        for t in range(7):
            torch.testing.assert_close(session.step(x[:, :, t]), model(x[:, :, : t + 1]), rtol=0, atol=1e-5)


def test_chunkwise_training_form_equals_parallel_and_causal_cls_ignores_the_future():
    model, chunked = _model(), _model(retention_form="chunkwise", chunk=3)
    chunked.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 7, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), model(x), rtol=0, atol=1e-5)
        later = x.clone()
        later[:, :, 5:] = torch.randn_like(later[:, :, 5:])
        features = model.forward_features(x)[:, :5], model.forward_features(later)[:, :5]  # the CLS of frames 0-4
        torch.testing.assert_close(*features, rtol=0, atol=1e-5)


def test_mean_cls_mode_is_not_streamable_and_sees_every_frame():
    model = _model(cls_mode="mean")
    with pytest.raises(ValueError, match="cls_mode=causal"):
        model.stream()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (1, 5) and model.forward_features(x).shape == (1, 1 + 16 * 4, 64)


def test_loads_a_hugging_face_timesformer_with_the_stated_key_mapping(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=128, num_labels=5)
    transformers.TimesformerForVideoClassification(cfg).save_pretrained(tmp_path / "hf")
    source = load_pretrained("timesformer", str(tmp_path / "hf"))
    hybrid = load_pretrained("timesformer_retnet", str(tmp_path / "hf"))
    assert hybrid.pretrained["layout"] == "hf TimeSformer" and hybrid.cfg.dim == 64 and hybrid.cfg.cls_mode == "causal"
    src, dst = source.state_dict(), hybrid.state_dict()
    qkv = src["blocks.1.temporal_attn.qkv.weight"]
    torch.testing.assert_close(dst["blocks.1.temporal_attn.q.weight"], qkv[:64])
    torch.testing.assert_close(dst["blocks.1.temporal_attn.k.weight"], qkv[64:128])
    torch.testing.assert_close(dst["blocks.1.temporal_attn.v.weight"], qkv[128:])
    torch.testing.assert_close(dst["blocks.1.temporal_attn.out.weight"], src["blocks.1.temporal_attn.proj.weight"])
    shared = [k for k in dst if ".temporal_attn." not in k]
    assert "head.weight" in shared and "time_embed" not in dst
    for key in shared:
        torch.testing.assert_close(dst[key], src[key])
    # the same through training's initialisation (a fresh gate; the run's own classifier)
    model = create_model("timesformer_retnet", num_classes=3, options=TINY)
    gate = model.blocks[0].temporal_attn.g.weight.clone()
    init_from_pretrained(model, "timesformer_retnet", str(tmp_path / "hf"))
    torch.testing.assert_close(model.blocks[0].temporal_attn.g.weight, gate)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, src["blocks.0.attn.qkv.weight"])


def test_options_are_checked_in_one_line():
    with pytest.raises(VidpipeError, match="cls_mode must be one of causal, mean"):
        create_model("timesformer_retnet", num_classes=2, options={**TINY, "cls_mode": "last"})
    with pytest.raises(VidpipeError, match="use divided"):
        create_model("timesformer_retnet", num_classes=2, options={**TINY, "attention": "space_only"})


def _saved_bytes(model, x) -> int:
    """Bytes of the tensors autograd keeps for backward during one training forward (deduplicated by storage)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("form", ["parallel", "chunkwise"])
def test_recomputing_the_temporal_update_changes_no_output_or_gradient_and_saves_less(dtype, atol, form):
    """recompute_time (the default) against the model keeping every activation: the same logits and every
    parameter's gradient, with drop-path on (its RNG replayed in backward), and fewer bytes saved for backward."""
    kept, recomputed = (_model(retention_form=form, chunk=3, drop_path=0.2, recompute_time=r).to(dtype).train() for r in (False, True))
    recomputed.load_state_dict(kept.state_dict())
    x = torch.randn(2, 3, 7, 32, 32, dtype=dtype)
    outs = []
    for model in (kept, recomputed):
        torch.manual_seed(5)  # the same drop-path draws in both
        logits = model(x)
        logits.square().sum().backward()
        outs.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=atol)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], grad, rtol=0, atol=atol, msg=name)
    assert _saved_bytes(recomputed, x) < 0.8 * _saved_bytes(kept, x)



class _Form(torch.nn.Module):
    """One form of a retention as a module's forward, so torch.func.functional_call can swap its weights."""

    def __init__(self, msr: MultiScaleRetention, form: str):
        super().__init__()
        self.msr, self.form = msr, form

    def forward(self, z):
        if self.form == "parallel":
            return self.msr(z)
        if self.form == "chunkwise":
            return self.msr.forward_chunkwise(z, 2)
        state, outs = None, []
        for n in range(z.shape[1]):
            y, state = self.msr.forward_step(z[:, n : n + 1], n, state)
            outs.append(y)
        return torch.cat(outs, 1)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_retention_gradients_pass_gradcheck_in_float64(form):
    """Each form's analytic gradients (through rotation, decay, GroupNorm and gate) against finite
    differences, for the input and every weight."""
    torch.manual_seed(0)
    module = _Form(MultiScaleRetention(8, 2).double(), form)
    names = [n for n, _ in module.named_parameters()]
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    weights = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    run = lambda x, *w: torch.func.functional_call(module, dict(zip(names, w)), (x,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x, *weights), eps=1e-6, atol=1e-6, fast_mode=True)  # random directions: a few forwards


def test_the_recomputed_hybrid_passes_gradcheck_in_float64():
    """The default training path (the temporal update under activation checkpointing, drop-path off) against
    finite differences, for the input clip and the first block's temporal weights."""
    model = _model(dim=16, heads=2, mlp_dim=16, depth=1, image_size=16, frames=3).double().train()
    with torch.no_grad():  # weights large enough that every temporal path moves the logits well past gradcheck's tolerance
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    assert model.blocks[0].recompute
    names = [n for n, _ in model.named_parameters() if n.startswith("blocks.0.temporal_attn.")]
    x = torch.randn(1, 3, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    weights = tuple(model.get_parameter(n).detach().clone().requires_grad_() for n in names)
    run = lambda x, *w: torch.func.functional_call(model, dict(zip(names, w)), (x,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x, *weights), eps=1e-6, atol=1e-6, fast_mode=True)  # random directions: a few forwards
