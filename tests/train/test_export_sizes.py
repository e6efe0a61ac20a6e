"""Every clip model exports to ONNX at a size it was not made for (the run's own T and crop), and the file
onnxruntime runs gives PyTorch's logits; the exporter prints nothing."""

import pytest
import torch

from vidpipe.models.registry import create_model, list_models, model_entry
from vidpipe.train.export import export_checked

pytest.importorskip("onnxruntime")

SMALL = {  # small widths and depths; T and crop differ from each model's native input
    "timesformer": dict(preset="tiny", depth=1, frames=8, image_size=224),
    "timesformer_retnet": dict(preset="tiny", depth=1, frames=8, image_size=224),
    "vivit_fe": dict(preset="tiny", spatial_depth=1, temporal_depth=1, frames=16, image_size=224),
    "squeezetime": dict(frames=4),  # its stem reads exactly T frames
    "r2plus1d_perceiver": dict(num_latents=8, dim=32, self_layers=1, heads=2, head_dim=16, cross_head_dim=16),
    "tin_r50": dict(segments=4),
}
CLIP_MODELS = [name for name in list_models() if model_entry(name).input == "clips"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIP_MODELS)
def test_onnx_export_at_a_non_native_size(name, tmp_path, capfd):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, options=SMALL.get(name, {}))
    frames = 4
    size = 64 if name != "vivit_fe" else 48  # 48: a 3 x 3 patch grid against ViViT's 14 x 14
    diff, runner = export_checked(model, frames, size, "onnx", tmp_path / "m.onnx")
    assert diff < 1e-4 and "onnxruntime" in runner
    out, err = capfd.readouterr()
    assert out == "" and err == ""
