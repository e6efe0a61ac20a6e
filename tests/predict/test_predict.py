"""`vidpipe predict` against independent references: `vidpipe eval` on the store made from the same
files, the model's own parallel forward for streams, a select-based ffmpeg decode for windows."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import save_file

from vidpipe.cli.main import cli
from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.manifest import Manifest
from vidpipe.io.decode import ClipSpec, decode_clip
from vidpipe.io.ffmpeg import Geometry, decode_frames, ffmpeg_binary, probe
from vidpipe.errors import VidpipeError
from vidpipe.predict import Predictor, list_videos
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train

TINY_TIMESFORMER = ["model_options.preset=tiny", "model_options.depth=2", "model_options.image_size=32", "model_options.patch_size=8"]


def trained(model, data, out, *overrides):
    cfg = load_config(None, ["optim.epochs=1", "data.workers=0", "data.batch_size=8", "device=cpu", *overrides],
                      base={"model": model, "data": {"path": str(data)}})
    train(cfg, out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def runs(synth_h264, tmp_path_factory):
    """Three runs, one per input kind: a frame-feature head (temporal_retnet on resnet18 features from a
    local weights file), a dense clip model (r2plus1d_18, 2 clips x 3 crops, JPEG store) and a TSN-segment
    model (timesformer_retnet, causal, WebDataset store)."""
    base = tmp_path_factory.mktemp("predict")
    manifest = build_manifest("synthetic", synth_h264)
    extract(manifest, base / "uniform", ExtractConfig(format="zarr", frames=8, size=32))
    torch.manual_seed(7)
    weights = base / "weights" / "resnet18-local.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, str(weights))
    cache_features(base / "uniform", base / "features", FeatureConfig(backbone="resnet18", weights=str(weights)))
    extract(manifest, base / "jpeg", ExtractConfig(frames=8, size=32, frame_codec="jpeg"))
    return {
        "features": trained("temporal_retnet", base / "features", base / "run-features", "data.frames=8"),
        "dense": trained("r2plus1d_18", base / "jpeg", base / "run-dense", "data.frames=4", "data.crop_size=32",
                         "data.test_clips=2", "data.test_crops=3"),
        "tsn": trained("timesformer_retnet", base / "uniform", base / "run-tsn", "data.frames=4", "data.crop_size=32", *TINY_TIMESFORMER),
        "weights": weights, "stores": {"features": base / "uniform", "dense": base / "jpeg", "tsn": base / "uniform"},
    }


@pytest.mark.parametrize("kind", ["features", "dense", "tsn"])
def test_predict_on_the_source_files_equals_eval_on_the_store(runs, kind, tmp_path):
    run = runs[kind]
    result = evaluate_checkpoint(run, split="test")
    expected = {r["id"]: r for r in map(json.loads, open(os.path.join(result["out"], "predictions.jsonl")))}
    manifest = Manifest.read(runs["stores"][kind] / "manifest.jsonl")
    records = manifest.split_records("test")
    ids = {str(manifest.abspath(r)): r.id for r in records}
    res = CliRunner().invoke(cli, ["predict", str(run), *ids, "--jsonl", str(tmp_path / "p.jsonl"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [g["source"] for g in got] == list(ids)  # in the order given
    classes = result["classes"]
    for g in got:
        e = expected[ids[g["source"]]]
        assert g["top"][0]["class"] == classes[e["pred"]]
        p = {t["class"]: t["p"] for t in g["top"]}
        for c, score in e["top5"]:
            assert p[classes[c]] == pytest.approx(score, abs=1e-4)


def test_a_jpeg_store_is_matched_through_the_codec_round_trip(runs, synth_h264):
    """The dense run's store holds JPEG frames: predict's frames equal the store's, not the plain decode."""
    from vidpipe.stores.clips import Store

    predictor = Predictor.load(runs["dense"], device="cpu")
    store = Store.open(runs["stores"]["dense"])
    manifest = Manifest.read(store.root / "manifest.jsonl")
    vid, stored, _, _ = next(store.samples("test"))
    record = next(r for r in manifest.records if r.id == vid)
    frames, _ = predictor.decode(manifest.abspath(record))
    np.testing.assert_array_equal(frames, stored)
    plain, _ = decode_clip(manifest.abspath(record), ClipSpec(8, 32, 42))
    assert not np.array_equal(plain, stored)


@pytest.mark.parametrize("kind", ["features", "tsn"])
def test_the_stream_after_frame_t_equals_the_model_on_the_first_t_frames(runs, synth_h264, kind):
    predictor = Predictor.load(runs[kind], device="cpu")
    video = sorted((synth_h264 / "test").rglob("*.mp4"))[0]
    inputs = []
    stream = list(predictor.stream(str(video), rate=12.5, inputs=inputs))
    assert len(stream) == len(inputs) == 12  # 24 frames at 25 fps resampled to 12.5 fps
    for t, p in enumerate(stream, start=1):
        assert p.frames == t and p.end == pytest.approx(t / 12.5)
        np.testing.assert_allclose(p.scores, predictor.causal_scores(inputs[:t]), rtol=0, atol=1e-5)
    every = list(predictor.stream(str(video), rate=12.5, every=5))
    assert [p.frames for p in every] == [5, 10]
    np.testing.assert_allclose(every[1].scores, stream[9].scores, rtol=0, atol=1e-6)


def test_a_stream_reads_a_piped_container_and_raw_frames(runs, synth_h264, tmp_path):
    """`-` with --stream: a Matroska stream on stdin gives the file's predictions exactly (the same frames);
    raw rgb24 frames with --raw give them to rounding: those frames were converted to RGB before they were
    scaled, where the file's are scaled in YUV (pixels differ by a level or two)."""
    video = sorted((synth_h264 / "test").rglob("*.mp4"))[0]
    mkv, raw = tmp_path / "v.mkv", tmp_path / "v.rgb"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(video), "-c", "copy", str(mkv)], check=True)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", str(raw)], check=True)
    w, h = probe(video).display_size
    run = str(runs["tsn"])
    base = [sys.executable, "-m", "vidpipe", "predict", run, "--stream", "--stream-fps", "12.5", "--every", "4"]
    predictor = Predictor.load(run, device="cpu")
    outputs = {"file": [p.to_json() for p in predictor.stream(str(video), rate=12.5, every=4)]}
    for name, args, source in (("mkv", ["-"], mkv), ("raw", ["-", "--raw", f"{w}x{h}@25"], raw)):
        out = tmp_path / f"{name}.jsonl"
        with open(source, "rb") as stdin:
            res = subprocess.run([*base, *args, "--jsonl", str(out)], stdin=stdin, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        outputs[name] = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["frames"] for p in outputs["file"]] == [4, 8, 12]
    for name, atol in (("mkv", 1e-5), ("raw", 2e-3)):
        assert [p["frames"] for p in outputs[name]] == [4, 8, 12]
        for a, b in zip(outputs["file"], outputs[name]):
            assert a["top"][0]["class"] == b["top"][0]["class"]
            p = {t["class"]: t["p"] for t in b["top"]}
            np.testing.assert_allclose([t["p"] for t in a["top"]], [p.get(t["class"], 0.0) for t in a["top"]], rtol=0, atol=atol)


def test_windows_are_videos_of_their_own_from_one_pass(runs, synth_h264):
    predictor = Predictor.load(runs["tsn"], device="cpu")
    video = sorted((synth_h264 / "test").rglob("*.mp4"))[0]
    info = probe(video)  # 24 frames at 25 fps
    windows = list(predictor.windows(video, window=0.4, stride=0.2))
    plan = predictor.window_plan(info.num_frames, info.fps, 0.4, 0.2)
    assert [(w.start, w.end) for w in windows] == [(p[0], p[1]) for p in plan] and [p[0] for p in plan] == [0, 0.2, 0.4, 0.56]
    # 10-frame windows every 5 frames, and the last one ends with the video
    geometry = Geometry.cover(info.display_size, 32, 42)
    for w, (_, _, indices) in zip(windows, plan):  # each window: the frames a select-based ffmpeg decode gives at its indices
        unique = sorted(set(indices))
        frames = decode_frames(video, unique, geometry)[[unique.index(i) for i in indices]]
        np.testing.assert_allclose(w.scores, predictor.fused("", frames).scores, rtol=0, atol=1e-6)
    whole = next(predictor.predict_many([video]))
    (one,) = predictor.windows(video, window=info.num_frames / info.fps, stride=1.0)  # one window over the whole video
    np.testing.assert_allclose(one.scores, whole.scores, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_ten_minute_stream_runs_in_flat_memory(runs, tmp_path):
    """Peak RSS of a fresh process after 10 minutes of video is within 4 MB of its peak after 10 seconds."""
    video = tmp_path / "long.mp4"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5", "-t", "600",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)], check=True)
    script = f"""
import json, resource, sys
from vidpipe.predict import Predictor
def peak_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
p = Predictor.load({str(runs['tsn'])!r}, device='cpu')
marks = {{}}
for pred in p.stream({str(video)!r}, rate=2):  # 1,200 frames
    if pred.frames in (20, 1200):
        marks[pred.frames] = peak_mb()
print(json.dumps(marks))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    marks = json.loads(res.stdout)
    assert set(marks) == {"20", "1200"}
    assert marks["1200"] - marks["20"] < 4, marks


def test_bad_input_gives_one_line_and_the_rest_goes_on(runs, synth_h264, tmp_path):
    runner = CliRunner()
    good = sorted((synth_h264 / "test").rglob("*.mp4"))[0]
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    mkv, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(good), "-c", "copy", str(mkv)], check=True)
    cut.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])  # Matroska states its duration up front
    res = runner.invoke(cli, ["predict", str(runs["tsn"]), str(text), str(good), str(cut), "--jsonl", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 1, res.output
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [("error" in x) for x in lines] == [True, False, True]  # the good video between two bad ones is predicted
    assert "truncated" in lines[2]["error"] and f"{text}: failed:" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "resnet18.safetensors"
    other.write_bytes(runs["weights"].read_bytes())  # a checkpoint of another model: torchvision's resnet18 weights
    cases = [
        (["predict", str(runs["tsn"]), str(empty)], "no videos"),
        (["predict", str(other), str(good)], "not a vidpipe checkpoint"),
        (["predict", str(runs["dense"]), str(good), "--stream"], "not causal"),
        (["predict", str(runs["tsn"]), str(good), "--views", "3"], "--views applies to dense clips"),
        (["predict", str(runs["tsn"]), str(good), "--every", "3"], "--every applies to --stream"),
    ]
    for args, message in cases:
        res = runner.invoke(cli, args)
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1, (args, res.output)
    # a picture named .mp4 is not a video; a --jsonl whose folder is missing is refused before any work
    png = tmp_path / "picture.mp4"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-c:v", "png",
                    "-f", "image2", str(png)], check=True)
    res = runner.invoke(cli, ["predict", str(runs["tsn"]), str(png)])
    assert res.exit_code == 1 and "a still image (png), not a video" in res.output, res.output
    res = runner.invoke(cli, ["predict", str(runs["tsn"]), str(good), "--jsonl", str(tmp_path / "no" / "p.jsonl")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output, res.output
    # raw frames of another size than --raw says: the byte count is not whole frames, and that is said (not a cut timeline)
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 64, 3), np.uint8)  # 64x48, declared 50x50
    res = runner.invoke(cli, ["predict", str(runs["tsn"]), "-", "--stream", "--raw", "50x50@25"], input=frames.tobytes())
    assert res.exit_code == 1 and "not a whole number of 50x50 rgb24 frames" in res.output, res.output
    moved = tmp_path / "elsewhere" / runs["weights"].name
    moved.parent.mkdir()
    runs["weights"].rename(moved)  # the run's backbone weights are no longer where the features were made
    try:
        res = runner.invoke(cli, ["predict", str(runs["features"]), str(good)])
        assert res.exit_code == 1 and "resnet18-local.safetensors" in res.output and "--backbone-weights" in res.output, res.output
        res = runner.invoke(cli, ["predict", str(runs["features"]), str(good), "--backbone-weights", str(moved), "--jsonl", str(tmp_path / "f.jsonl")])
        assert res.exit_code == 0, res.output
    finally:
        moved.rename(runs["weights"])


def test_list_videos_reads_folders_and_stdin(synth_h264):
    folder = synth_h264 / "test"
    found = list_videos([str(folder)])
    assert found == sorted(found) and len(found) == 10 and all(p.suffix == ".mp4" for p in found)
    import io

    assert list_videos(["-"], stdin=io.StringIO(f"{found[0]}\n\n{found[1]}\n")) == found[:2]


def test_a_folder_is_a_root_its_links_out_need_the_flag(synth_h264, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    inside, outside = sorted((synth_h264 / "test").rglob("*.mp4"))[:2]
    (folder / "here.mp4").write_bytes(inside.read_bytes())
    (folder / "there.mp4").symlink_to(outside)  # a link out of the folder
    with pytest.raises(VidpipeError, match="leads outside it .*--allow-outside-root"):
        list_videos([str(folder)])
    assert [p.name for p in list_videos([str(folder)], allow_outside_root=True)] == ["here.mp4", "there.mp4"]
    assert list_videos([str(folder / "there.mp4")]) == [folder / "there.mp4"]  # a file named by the user is read
