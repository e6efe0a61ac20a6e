"""The benchmarks run end to end on tiny inputs (their numbers are for the README, not for asserts)."""

import json

import pytest
from click.testing import CliRunner

from vidpipe.cli.main import cli
from vidpipe.bench.extract import RUNS, bench_extract, table_rows


def test_bench_extract_smoke(tmp_path):
    results = bench_extract(tmp_path / "work", videos_per_class=2, sets=("synthetic",), frames=4, size=32, log=lambda m: None)
    (row,) = results["rows"]
    assert row["videos"] == 20 and row["source_frames"] == 640 and row["ceiling_videos_per_s"] > 0 and row["pyav_ceiling_videos_per_s"] > 0
    assert set(row["runs"]) == {label for label, _ in RUNS["synthetic"]}
    for run in row["runs"].values():
        assert run["videos_per_s"] > 0 and run["backends"] == {"pyav": 20}
        assert run["fraction_of_pyav_ceiling"] > 0 and run["fraction_of_resize_ceiling"] > 0 and run["of_bound"] > 0
        assert set(run["stages"]) >= {"probe", "decode", "write"} and all(v > 0 for v in run["stages"].values() if v)
        assert run["bytes_per_video"] >= 4 * 32 * 42 * 3 * 0.1
    assert row["resize_ceiling_s"] > row["pyav_ceiling_s"] * 0.5 and results["disk_write_bytes_per_s"] > 0
    assert len(table_rows(results)) == 5  # three ceilings, two runs


def test_bench_extract_dali_row_says_why_it_was_skipped(tmp_path, monkeypatch):
    import vidpipe.bench.extract as be

    monkeypatch.setattr(be, "dali_gpu_missing", lambda: "no GPU")
    monkeypatch.setitem(be.RUNS, "synthetic", [("webdataset", dict(format="webdataset", backend="ffmpeg")),
                                               ("webdataset, DALI", dict(format="webdataset", backend="dali"))])
    results = be.bench_extract(tmp_path / "work", videos_per_class=2, sets=("synthetic",), frames=4, size=32, log=lambda m: None)
    runs = results["rows"][0]["runs"]
    assert runs["webdataset"]["videos_per_s"] > 0
    assert runs["webdataset, DALI"] == {"skipped": "no GPU"}
    assert table_rows(results)[-1][-1] == "skipped (no GPU)"
    assert "720p-h264" not in be.default_sets()


def test_bench_extract_cli_writes_json(tmp_path, monkeypatch):
    import vidpipe.bench.extract as be

    monkeypatch.setattr(be, "default_sets", lambda: ("synthetic",))
    out = tmp_path / "extract.json"
    res = CliRunner().invoke(cli, ["bench", "extract", "--work", str(tmp_path / "w"), "--videos-per-class", "2",
                                   "--frames", "4", "--size", "32", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "ceiling" in res.output and json.loads(out.read_text())["rows"][0]["set"] == "synthetic"


def test_bench_loader_smoke(synth_h264, tmp_path):
    from vidpipe.bench.loader import bench_loader
    from vidpipe.bench.loader import table_rows as loader_rows
    from vidpipe.datasets.adapters import build_manifest
    from vidpipe.stores.extract import ExtractConfig, extract
    from vidpipe.data.loaders import ClipConfig
    from vidpipe.data.sampling import Sampling
    from vidpipe.stores.clips import Store

    m = build_manifest("synthetic", synth_h264)
    for fmt in ("webdataset", "zarr"):
        extract(m, tmp_path / fmt, ExtractConfig(format=fmt, frames=8, size=32))
    stores = [Store.open(tmp_path / f) for f in ("webdataset", "zarr")]
    results = bench_loader(m, stores, ClipConfig(sampling=Sampling.tsn(4)), workers=0, batch_size=4, clips=8, decode_clips=4)
    paths = [r["path"] for r in results["rows"]]
    assert paths[:2] == ["decode every epoch (PyAV, in-process)", "decode every epoch (an ffmpeg process per video)"]
    assert "webdataset raw store" in paths and "zarr raw store" in paths
    assert all(r["clips_per_s"] > 0 for r in results["rows"]) and len(loader_rows(results)) == 6 + 2  # and the two limits
    assert max(r["x_decode"] for r in results["rows"][:2]) == 1.0  # against the faster decode path
    assert all("of_ceiling" in r and "of_read_limit" in r for r in results["rows"] if r["path"].endswith(" store"))
    read = results["limits"]["read"]  # only the 4 sampled frames of each of the 8 clips were read
    _, h, w, c = stores[0].clip_shape
    assert read["mb_per_s"] * read["seconds"] * 2**20 == pytest.approx(8 * 4 * h * w * c)
    assert results["limits"]["jpeg_decode"] == {"skipped": "needs a WebDataset JPEG store among --store"}


def test_bench_features_smoke(synth_h264, tmp_path):
    from vidpipe.bench.features import bench_features
    from vidpipe.bench.features import table_rows as feature_rows
    from vidpipe.datasets.adapters import build_manifest
    from vidpipe.stores.extract import ExtractConfig, extract

    extract(build_manifest("synthetic", synth_h264), tmp_path / "s", ExtractConfig(format="zarr", frames=2, size=32))
    results = bench_features(tmp_path / "s", backbones=("resnet18",), device="cpu", work=tmp_path / "w")
    (row,) = results["rows"]
    assert row["videos"] == 30 and row["frames_per_s"] > 0 and row["features"] == [2, 512]
    assert row["bytes_per_video"] > 0 and len(feature_rows(results)) == 1


def test_bench_extract_store_modes_report_bytes_against_the_source(tmp_path, monkeypatch):
    import vidpipe.bench.extract as be

    monkeypatch.setitem(be.BENCH_SETS, "kinetics-like", (dict(codec="h264", width=64, height=48, frames=30, fps=25.0), "tiny"))
    results = be.bench_extract(tmp_path / "work", videos_per_class=2, sets=("kinetics-like",), frames=4, size=32, log=lambda m: None)
    runs = results["rows"][0]["runs"]
    assert set(runs) == {label for label, _ in be.RUNS["kinetics-like"]}
    source = results["rows"][0]["source_bytes"]
    for run in runs.values():
        assert run["of_source_bytes"] == run["store_bytes"] / source
    assert runs["webdataset, 15 fps, jpeg"]["store_bytes"] < runs["webdataset, 15 fps"]["store_bytes"]


def test_bench_loader_data_wait(synth_h264, tmp_path):
    from vidpipe.bench.loader import bench_loader, table_columns, table_rows
    from vidpipe.data.loaders import ClipConfig
    from vidpipe.data.sampling import Sampling
    from vidpipe.datasets.adapters import build_manifest
    from vidpipe.stores.clips import Store
    from vidpipe.stores.extract import ExtractConfig, extract

    m = build_manifest("synthetic", synth_h264)
    extract(m, tmp_path / "s", ExtractConfig(format="webdataset", frames=8, size=32))
    results = bench_loader(m, [Store.open(tmp_path / "s")], ClipConfig(sampling=Sampling.tsn(4), train=True), workers=0, batch_size=2,
                           clips=4, decode_clips=2, train_model="r2plus1d_18", train_steps=2)
    waits = [r["data_wait"] for r in results["rows"] if "data_wait" in r]
    assert len(waits) == 2  # the faster decode path and the store
    for w in waits:
        assert w["steps"] == 2 and 0 < w["wait_fraction"] < 1 and w["compute_s"] > 0
        assert abs(w["step_s"] * 2 - (w["wait_s"] + w["compute_s"])) < 1e-9
    assert table_columns(results)[-1] == "data wait (r2plus1d_18 step)" and len(table_rows(results)[0]) == len(table_columns(results))


def test_bench_loader_refuses_a_feature_model(synth_h264, tmp_path):
    res = CliRunner().invoke(cli, ["bench", "loader", "--dataset", "synthetic", "--root", str(synth_h264), "--store", str(tmp_path),
                                   "--train-model", "tsn_mean", "--json", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "reads features" in res.output and "Traceback" not in res.output


def test_bench_models_smoke(tmp_path):
    import numpy as np

    from vidpipe.bench.models import bench_models, growth_exponent, plot, table_rows

    variants = ("timesformer", "timesformer_retnet-chunkwise", "vivit_fe-mini", "tin_r50")  # TIN: its segments follow T
    results = bench_models(variants, frames=(2, 4), size=32, preset="tiny", steps=1, log=lambda m: None)
    assert [(r["variant"], r["frames"]) for r in results["rows"]] == [(v, t) for v in variants for t in (2, 4)]
    for r in results["rows"]:
        assert r["gflops_per_clip"] > 0 and r["activation_mb"] > 0 and r["train_step_s"] > 0 and r["infer_clips_per_s"] > 0
    assert set(results["summary"]["exponents"]) == set(variants)
    assert set(results["summary"]["ratios"]) == {"timesformer_retnet-chunkwise / timesformer", "vivit_fe-mini / timesformer", "tin_r50 / timesformer"}
    assert set(results["summary"]["ratios"]["timesformer_retnet-chunkwise / timesformer"]) == {2, 4}
    mini = [r for r in results["rows"] if r["variant"] == "vivit_fe-mini"]
    assert mini[1]["gflops_per_clip"] > mini[0]["gflops_per_clip"] and mini[0]["preset"] == "tiny"
    plot(results, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0 and len(table_rows(results)) == 8
    t, y = [8, 16, 32, 64], [3.0, 5.5, 12.0, 30.0]
    assert abs(growth_exponent(t, y) - np.polyfit(np.log(t), np.log(y), 1)[0]) < 1e-12


def test_bench_models_activation_memory_is_activations_not_weights():
    """Doubling T doubles every token tensor autograd saves, so the activation figure doubles; were the
    weights (8 M parameters, 30 MB) counted, it would barely move."""
    from vidpipe.bench.models import measure

    small, big = (measure("timesformer", t, 32, 1, "tiny", 1, "cpu") for t in (2, 4))
    assert 1.8 < big["activation_mb"] / small["activation_mb"] < 2.2
    assert small["activation_mb"] < 0.2 * small["params"] * 4 / 2**20


def test_bench_latency_reports_pytorch_and_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    res = CliRunner().invoke(cli, ["bench", "latency", "--models", "squeezetime,tsn_r50", "--frames", "4", "--sizes", "32", "--steps", "1",
                                   "--json", str(tmp_path / "lat.json")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "lat.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["squeezetime", "tsn_r50"]
    for r in rows:
        assert r["latency_ms"] > 0 and r["throughput_clips_per_s"] > 0 and r["onnxruntime_latency_ms"] > 0 and r["gflops_per_clip"] > 0
