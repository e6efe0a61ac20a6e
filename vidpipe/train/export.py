"""`vidpipe export`: a trained clip model as ONNX or TorchScript, checked against PyTorch, with a sidecar.

The exported graph takes what every vidpipe clip model's forward takes, normalised float32
(B, 3, T, H, W) with the run's T and crop (the batch dimension is dynamic), and returns logits. The
sidecar `FILE.json` records everything a deployment needs besides the file: input layout and shape,
mean/std, sampling, the whole input spec (`input_spec`: the store's decode and frame codec, the test
sampling and transform; `vidpipe.predict.inputs.VideoInputs` makes a video into the input from it
alone), classes, the run and checkpoint it came from, and the check: the largest absolute
difference between the export (run by onnxruntime, or the TorchScript interpreter) and PyTorch on a
random clip. Files appear whole or not at all (written under a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.train.card import load_run

FORMATS = ("onnx", "torchscript")


def export_model(run_or_ckpt: str | Path, fmt: str, out: str | Path, opset: int = 17, tolerance: float = 1e-4) -> dict:
    """Export the checkpoint a run chose (or the checkpoint given) to `out`; returns the sidecar's contents."""
    if fmt not in FORMATS:
        raise VidpipeError(f"--format must be one of {', '.join(FORMATS)}; got '{fmt}'")
    run = load_run(run_or_ckpt)
    card, model, ckpt = run.card, run.model, run.checkpoint
    if card.input.kind != "clips":
        raise VidpipeError(f"{card.model} reads {card.input.kind.replace('_', ' ')} from a feature store; export applies to clip models")
    spec = card.input
    frames, size = spec.sampling(train=False).frames_per_view(), spec.crop  # one view, as the run's test inputs are cut
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        diff, runner = export_checked(model, frames, size, fmt, tmp, opset)
    except VidpipeError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # the exporter's own failure: name the model and the format, never half a file
        tmp.unlink(missing_ok=True)
        other = "torchscript" if fmt == "onnx" else "onnx"
        raise VidpipeError(f"{card.model} could not be exported to {fmt} ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}); "
                           f"try --format {other}") from None
    if not diff <= tolerance:
        tmp.unlink(missing_ok=True)
        raise VidpipeError(f"the {fmt} export of {card.model} differs from PyTorch by {diff:.3g} (> {tolerance:g}); nothing was written")
    os.replace(tmp, out)
    sidecar = {
        "format": fmt, "file": out.name, "sha256": sha256_file(out), "model": card.model,
        "input": {"name": "clip", "layout": "(B, 3, T, H, W)", "dtype": "float32", "shape": [None, 3, frames, size, size],
                  "range": "RGB in [0, 1], then (x - mean) / std per channel", "mean": list(spec.augment["mean"]), "std": list(spec.augment["std"]),
                  "sampling": spec.test, "test_short_side": spec.augment["test_short_side"], "crop": size,
                  "stored_frames": spec.clip},
        # everything that makes a new video into this input, the run card's record: the store's decode (frames or
        # fps, size, geometry), its frame codec, the test sampling and transform; vidpipe.predict.inputs.VideoInputs
        # rebuilds the clips from it alone (InputSpec.from_dict)
        "input_spec": spec.to_dict(),
        "output": {"name": "logits", "shape": [None, len(card.classes)], "softmax": "not applied"},
        "classes": card.classes,
        "source": {"checkpoint": str(ckpt.resolve()), "epoch": card.epoch, "sha256": sha256_file(ckpt)},
        "check": {"runner": runner, "max_abs_diff": diff, "tolerance": tolerance, "clip": "randn(1, 3, T, S, S), seed 0"},
        "versions": {"torch": torch.__version__},
    }
    side = out.with_name(out.name + ".json")
    side_tmp = side.with_name(f".{side.name}.tmp")
    side_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    os.replace(side_tmp, side)
    return sidecar


def export_checked(model, frames: int, size: int, fmt: str, path: Path, opset: int = 17) -> tuple[float, str]:
    """Write `model` (eval mode) for (B, 3, frames, size, size) clips to `path` and run the file on a random
    clip: (largest |export - PyTorch|, what ran it). Models whose embeddings were made for another size
    resize them once first (`fix_input_size`), so the graph holds no resampling. Exporter output is
    silenced; its errors propagate."""
    model.eval()
    if hasattr(model, "fix_input_size"):
        model.fix_input_size(frames, size)
    clip = torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(clip).numpy()
    with warnings.catch_warnings(), _quiet():  # tracer notices, and the graph an exporter prints as it fails
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            return _onnx(model, clip, expected, path, opset)
        return _torchscript(model, clip, expected, path)


@contextlib.contextmanager
def _quiet():
    """Silence stdout and stderr: Python's, and file descriptors 1 and 2 (the exporters print from C++ too)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _onnx(model, clip, expected, path: Path, opset: int) -> tuple[float, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise VidpipeError("ONNX export is checked with onnxruntime: pip install onnxruntime (or export --format torchscript)") from None
    torch.onnx.export(model, (clip,), str(path), input_names=["clip"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"clip": clip.numpy()})[0]
    return float(np.abs(got - expected).max()), f"onnxruntime {ort.__version__} (CPU)"


def _torchscript(model, clip, expected, path: Path) -> tuple[float, str]:
    traced = torch.jit.trace(model, (clip,), check_trace=False)
    traced.save(str(path))
    with torch.no_grad():
        got = torch.jit.load(str(path))(clip).numpy()
    return float(np.abs(got - expected).max()), "torch.jit.load (TorchScript interpreter)"
