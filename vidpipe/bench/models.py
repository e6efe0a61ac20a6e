"""`vidpipe bench models`: parameters, FLOPs, memory and speed of clip models as T grows.

Per model variant and frame count T, on random weights and a random (B, 3, T, S, S) clip:
- FLOPs of one forward pass (`torch.utils.flop_counter.FlopCounterMode`: matmuls and convolutions);
- activation memory: the bytes of every tensor autograd saves for backward during one training forward
  (`torch.autograd.graph.saved_tensors_hooks`, unique storages, the parameters left out; exact, on any device);
- peak memory: CUDA's max_memory_allocated where a GPU runs it, else the peak RSS of the process that
  measured that row alone (each row runs in a fresh process), minus that process's RSS before the
  model was built;
- train step seconds (forward, backward, SGD step; median of `steps`) and inference clips/s.
The growth exponent of activation memory in T is the least-squares slope of log(memory) on log(T).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from pathlib import Path

# name -> (registry model, options, what it is)
VARIANTS = {
    "timesformer": ("timesformer", {}, "TimeSformer, divided attention (fused SDPA kernel)"),
    "timesformer-math": ("timesformer", {"fused_attention": False}, "TimeSformer, explicit softmax attention as Hugging Face computes it"),
    "timesformer_retnet": ("timesformer_retnet", {"retention_form": "parallel"},
                           "RetNet hybrid (default: parallel retention, temporal update recomputed in backward)"),
    "timesformer_retnet-chunkwise": ("timesformer_retnet", {"retention_form": "chunkwise", "chunk": 8},
                                     "RetNet hybrid, chunkwise retention (chunks of 8), temporal update recomputed"),
    "timesformer_retnet-kept": ("timesformer_retnet", {"retention_form": "parallel", "recompute_time": False},
                                "RetNet hybrid, parallel retention, every activation kept (before recompute_time)"),
    "timesformer_retnet-mean": ("timesformer_retnet", {"retention_form": "parallel", "cls_mode": "mean"},
                                "RetNet hybrid with TimeSformer's one video CLS (cls_mode=mean: not causal), temporal update recomputed"),
    "vivit_fe": ("vivit_fe", {}, "ViViT factorised encoder, the --preset's widths (base: 12 spatial + 4 temporal blocks), t = 2 tubelets"),
    "vivit_fe-mini": ("vivit_fe", {"preset": "tiny"}, "Mini-ViViT (vivit_fe tiny preset: DeiT-Ti width, 4 + 4 blocks) whatever --preset says"),
    "tsn_r50": ("tsm_r50", {"is_shift": False}, "TSN: ResNet-50 per segment, logits averaged (tsm_r50 with the shift off; no --preset)"),
    "tsm_r50": ("tsm_r50", {}, "TSM ResNet-50, shift 1/8 + 1/8 of the channels in every bottleneck"),
    "tin_r50": ("tin_r50", {}, "TIN ResNet-50, learned fractional interlace of 1/4 of the channels (pure PyTorch tin_shift)"),
    "squeezetime": ("squeezetime", {}, "SqueezeTime: T folded into the stem's channels, CTL blocks (a 2D network)"),
    "r2plus1d_18": ("r2plus1d_18", {}, "R(2+1)D-18 (torchvision), factorised 3D convolutions"),
}
DEFAULT_VARIANTS = tuple(VARIANTS)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(variant: str, frames: int, size: int, batch: int, preset: str, steps: int, device: str) -> dict:
    """One row, in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidpipe.models import count_params

    name, options, _ = VARIANTS[variant]
    rss0 = _rss_bytes()
    model, sized = _model(variant, frames, preset, device)  # the preset, frames or segments the model has
    x = torch.randn(batch, 3, frames, size, size, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row = {"variant": variant, "model": name, "options": options, "frames": frames, "size": size, "batch": batch, "preset": options.get("preset", sized.get("preset")),
           "params": count_params(model)}
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    row["gflops_per_clip"] = counter.get_total_flops() / batch / 1e9

    train_batch = max(batch, getattr(model, "min_train_batch", 1))  # SqueezeTime's gate BatchNorm cannot train on one clip
    if train_batch != batch:
        x = torch.randn(train_batch, 3, frames, size, size, device=device)
    row["train_batch"] = train_batch
    model.train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved too (a linear keeps its weight): not activations
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).logsumexp(-1).mean()
    loss.backward()
    row["activation_mb"] = sum(storages.values()) / 2**20
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    times = []
    for step in range(steps + 1):  # the first step warms up, untimed
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(x).logsumexp(-1).mean().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    row["train_step_s"] = statistics.median(times)
    model.eval()
    x = x[:batch]
    with torch.no_grad():
        model(x)  # warm
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        row["infer_clips_per_s"] = steps * batch / (time.perf_counter() - t0)
    if device == "cuda":
        row["peak_mb"], row["peak_kind"] = torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        row["peak_mb"], row["peak_kind"] = (peak - rss0) / 2**20, "peak RSS of the measuring process above its RSS before the model"
    return row


def _model(variant: str, frames: int, preset: str, device: str):
    import torch

    from vidpipe.models import create_model, model_entry

    name, options, _ = VARIANTS[variant]
    fields = {f.name for f in dataclasses.fields(model_entry(name).config)}
    sized = {k: v for k, v in {"preset": preset, "frames": frames, "segments": frames}.items() if k in fields}
    torch.manual_seed(0)
    return create_model(name, num_classes=400, options={**sized, **options}).to(device).eval(), sized


def _median_seconds(fn, steps: int) -> float:
    fn()  # warm-up, untimed
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_latency(variant: str, frames: int, size: int, preset: str, steps: int, device: str, onnx: bool = True) -> dict:
    """Inference only, for deployment: latency per clip at batch 1 (PyTorch and, exported, onnxruntime on
    the CPU) and throughput at batch 8. FLOPs of one clip as `measure` counts them."""
    import tempfile

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidpipe.models import count_params

    model, sized = _model(variant, frames, preset, device)
    one = torch.randn(1, 3, frames, size, size, device=device)
    eight = torch.randn(8, 3, frames, size, size, device=device)
    row = {"variant": variant, "model": VARIANTS[variant][0], "frames": frames, "size": size, "preset": sized.get("preset"),
           "params": count_params(model), "device": device}

    def run(x):
        with torch.no_grad():
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(one)
    row["gflops_per_clip"] = counter.get_total_flops() / 1e9
    row["latency_ms"] = 1000 * _median_seconds(lambda: run(one), steps)
    row["throughput_clips_per_s"] = 8 / _median_seconds(lambda: run(eight), max(1, steps // 2))
    row["onnxruntime_latency_ms"] = None
    if onnx:
        try:
            import warnings

            import onnxruntime as ort

            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = f"{tmp}/m.onnx"
                torch.onnx.export(model.cpu(), (one.cpu(),), path, input_names=["clip"], output_names=["logits"], opset_version=17,
                                  dynamic_axes={"clip": {0: "batch"}}, dynamo=False)
                session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                feed = {"clip": one.cpu().numpy()}
                row["onnxruntime_latency_ms"] = 1000 * _median_seconds(lambda: session.run(None, feed), steps)
                row["onnxruntime"] = ort.__version__
        except Exception as e:  # a model the exporter cannot take: reported, not fatal
            row["onnxruntime_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return row


def bench_latency(variants, frames: int = 16, sizes=(112, 224), preset: str = "base", steps: int = 5, device: str = "cpu",
                  onnx: bool = True, log=print) -> dict:
    import torch

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        from vidpipe.errors import VidpipeError

        raise VidpipeError(f"unknown model variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    results = {"machine": platform.platform(), "device": device, "torch_threads": torch.get_num_threads(), "frames": frames,
               "sizes": list(sizes), "preset": preset, "steps": steps, "variants": {v: VARIANTS[v][2] for v in variants}, "rows": []}
    for size in sizes:
        for variant in variants:
            log(f"{variant} {frames}x{size} ...")
            results["rows"].append(measure_latency(variant, frames, size, preset, steps, device, onnx))
    return results


LATENCY_COLUMNS = ["variant", "T x S", "params", "GFLOPs/clip", "latency ms (batch 1)", "onnxruntime ms (batch 1)", "clips/s (batch 8)"]


def latency_rows(results: dict) -> list[list]:
    return [[r["variant"], f"{r['frames']}x{r['size']}", f"{r['params'] / 1e6:.1f} M", f"{r['gflops_per_clip']:.1f}", f"{r['latency_ms']:.0f}",
             f"{r['onnxruntime_latency_ms']:.0f}" if r["onnxruntime_latency_ms"] is not None else "n/a", f"{r['throughput_clips_per_s']:.2f}"]
            for r in results["rows"]]


def _child(queue, args):
    try:
        queue.put(measure(*args))
    except Exception as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def measure_isolated(*args) -> dict:
    """measure() in a fresh process, so its peak RSS is this row's alone."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, args))
    proc.start()
    row = queue.get()
    proc.join()
    if "error" in row:
        raise RuntimeError(f"bench models {args[0]} T={args[1]}: {row['error']}")
    return row


def growth_exponent(frames: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(T): 1 = linear, 2 = quadratic."""
    xs, ys = [math.log(f) for f in frames], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def bench_models(variants=DEFAULT_VARIANTS, frames=(8, 16, 32, 64), size: int = 112, batch: int = 1, preset: str = "base",
                 steps: int = 2, device: str = "cpu", log=print, save: str | Path | None = None) -> dict:
    import torch

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        from vidpipe.errors import VidpipeError

        raise VidpipeError(f"unknown model variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    results = {"machine": platform.platform(), "device": device, "torch_threads": torch.get_num_threads(), "size": size, "batch": batch,
               "preset": preset, "steps": steps, "variants": {v: VARIANTS[v][2] for v in variants}, "rows": []}
    order = {v: k for k, v in enumerate(variants)}
    for t in frames:  # the variants interleaved at each T, so a slow spell of a shared machine hits them alike
        for variant in variants:
            log(f"{variant} T={t} ...")
            results["rows"].append(measure_isolated(variant, t, size, batch, preset, steps, device))
            results["rows"].sort(key=lambda r: (order[r["variant"]], r["frames"]))
            if save is not None:  # what is measured so far survives a later row's failure
                write_json(results, Path(save))
    results["summary"] = summarise(results)
    return results


def summarise(results: dict) -> dict:
    """Per variant: the growth exponent of activation memory and FLOPs in T; per T: the hybrid's activation
    and peak memory and step time relative to both TimeSformer rows, every other model's relative to TimeSformer's."""
    rows = results["rows"]
    out = {"exponents": {}, "ratios": {}}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        if len(mine) >= 2:
            fs = [r["frames"] for r in mine]
            out["exponents"][variant] = {"activation_memory": growth_exponent(fs, [r["activation_mb"] for r in mine]),
                                         "gflops": growth_exponent(fs, [r["gflops_per_clip"] for r in mine])}
    for base in ("timesformer", "timesformer-math"):
        for r in rows:
            ref = next((b for b in rows if b["variant"] == base and b["frames"] == r["frames"]), None)
            compared = r["variant"].startswith("timesformer_retnet") or (base == "timesformer" and not r["variant"].startswith("timesformer"))
            if ref is None or not compared:
                continue
            out["ratios"].setdefault(f"{r['variant']} / {base}", {})[r["frames"]] = {
                "activation_memory": r["activation_mb"] / ref["activation_mb"], "peak_memory": r["peak_mb"] / ref["peak_mb"],
                "train_step": r["train_step_s"] / ref["train_step_s"]}
    return out


def table_rows(results: dict) -> list[list]:
    return [[r["variant"], r["frames"], f"{r['params'] / 1e6:.1f} M", f"{r['gflops_per_clip']:.1f}", f"{r['activation_mb']:.0f}",
             f"{r['peak_mb']:.0f}", f"{r['train_step_s']:.2f}", f"{r['infer_clips_per_s']:.2f}"] for r in results["rows"]]


TABLE_COLUMNS = ["variant", "T", "params", "GFLOPs/clip", "activations MB", "peak MB", "train step s", "infer clips/s"]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant in dict.fromkeys(r["variant"] for r in results["rows"]):
        mine = [r for r in results["rows"] if r["variant"] == variant]
        fs = [r["frames"] for r in mine]
        axes[0].plot(fs, [r["activation_mb"] for r in mine], marker="o", label=variant)
        axes[1].plot(fs, [r["peak_mb"] for r in mine], marker="o", label=variant)
    for ax, title in zip(axes, ("activations saved for backward (MB)", f"peak memory (MB, {results['rows'][0]['peak_kind'].split(' of')[0]})")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames T")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['preset']} preset, {results['size']}x{results['size']}, batch {results['batch']}, {results['device']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
