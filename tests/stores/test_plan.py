"""The extraction plan is decided once and kept: a resume cuts the store as the plan says, whatever this
release's constants are, and a plan.json from before plans kept their constants resumes identically."""

import json

import pytest

from vidpipe.datasets.adapters import build_manifest
from vidpipe.errors import VidpipeError
from vidpipe.stores import plan as plan_module
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.typed import differences

SETTINGS = dict(format="webdataset", frames=4, size=32, shard_size="100KB")  # 5 videos a shard


def store_bytes(store):
    """store.json and every shard it names, by content."""
    index = json.loads((store / "store.json").read_text())
    return index, {f["path"]: f["sha256"] for s in index["splits"].values() for f in s["files"]}


@pytest.fixture(scope="module")
def reference(synth_h264, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "one"
    extract(build_manifest("synthetic", synth_h264), out, ExtractConfig(**SETTINGS))
    return out


def test_a_resume_keeps_the_plan_it_was_cut_with(synth_h264, tmp_path, reference, monkeypatch):
    m = build_manifest("synthetic", synth_h264)
    out = tmp_path / "store"
    assert not extract(m, out, ExtractConfig(**SETTINGS), part=(0, 2)).finalized
    recorded = json.loads((out / "_extract" / "plan.json").read_text())
    assert recorded["constants"] == {"sample_overhead": plan_module.SAMPLE_OVERHEAD, "jpeg_size_estimate": plan_module.JPEG_SIZE_ESTIMATE}
    # a later release sizes shards otherwise: a fresh store is cut differently, the half-finished one is not
    monkeypatch.setattr(plan_module, "SAMPLE_OVERHEAD", 12_000)
    fresh = extract(m, tmp_path / "fresh", ExtractConfig(**SETTINGS)).summary
    assert fresh["splits"]["train"]["shards"] != Store.open(reference).index["splits"]["train"]["shards"]
    assert extract(m, out, ExtractConfig(**SETTINGS), part=(1, 2)).finalized
    assert store_bytes(out) == store_bytes(reference)


def test_a_plan_from_before_its_constants_resumes_identically(synth_h264, tmp_path, reference):
    m = build_manifest("synthetic", synth_h264)
    out = tmp_path / "store"
    extract(m, out, ExtractConfig(**SETTINGS), part=(0, 2))
    plan_file = out / "_extract" / "plan.json"
    new = json.loads(plan_file.read_text())
    old = {k: new[k] for k in ("settings", "manifest_sha256", "vidpipe_store")}  # what vidpipe <= 0.9 wrote
    plan_file.write_text(json.dumps(old, indent=2, sort_keys=True))
    assert extract(m, out, ExtractConfig(**SETTINGS), part=(1, 2)).finalized
    assert store_bytes(out) == store_bytes(reference)
    assert json.loads(plan_file.read_text()) == old  # read as it is, never rewritten


def test_other_settings_are_refused_naming_each_difference(synth_h264, reference):
    m = build_manifest("synthetic", synth_h264)
    with pytest.raises(VidpipeError) as e:
        extract(m, reference, ExtractConfig(**{**SETTINGS, "size": 48, "frames": 6}))
    assert "frames 4 -> 6" in str(e.value) and "size 32 -> 48" in str(e.value) and "--overwrite" in str(e.value)
    m.records = m.records[1:]
    with pytest.raises(VidpipeError, match=r"manifest [0-9a-f]{16}\.\.\. -> [0-9a-f]{16}\.\.\."):
        extract(m, reference, ExtractConfig(**SETTINGS))


def test_differences_by_hand():
    assert differences({"a": 1, "w": {"id": "x", "sha": "1"}}, {"a": 1, "w": {"id": "y", "sha": "1"}, "b": True}) == \
        ["w.id x -> y", "b null -> true"]


@pytest.mark.parametrize("stage", ["extract", "features"])
def test_a_damaged_plan_is_one_line_and_overwrite_starts_again(synth_h264, tmp_path, reference, stage):
    if stage == "extract":
        m = build_manifest("synthetic", synth_h264)
        out, run = tmp_path / "store", lambda overwrite: extract(m, tmp_path / "store", ExtractConfig(**SETTINGS), overwrite=overwrite)
        extract(m, out, ExtractConfig(**SETTINGS), part=(0, 2))
        plan_file = out / "_extract" / "plan.json"
    else:
        out = tmp_path / "features"
        run = lambda overwrite: cache_features(reference, out, FeatureConfig(weights="random", device="cpu"), overwrite=overwrite)  # noqa: E731
        run(False)
        plan_file = out / "_cache" / "plan.json"
    plan_file.write_text(plan_file.read_text()[:40])  # cut short (a plan written non-atomically by an old release)
    with pytest.raises(VidpipeError, match="plan.json is damaged.*pass --overwrite"):
        run(False)
    assert run(True).summary is not None


@pytest.mark.parametrize("damage, message", [(lambda p: p.update(per_shard=0), "no usable per_shard"),
                                             (lambda p: p["constants"].update(extra=1), "no usable per_shard"),
                                             (lambda p: p["settings"].update(bogus=1), "settings this vidpipe does not know")])
def test_a_plan_json_that_does_not_hold_a_plan_is_one_line(synth_h264, tmp_path, damage, message):
    """plan.json is the store's own file, so untrusted: odd values stop finalize with one line, not a traceback."""
    from vidpipe.stores.extract import finalize

    m = build_manifest("synthetic", synth_h264)
    out = tmp_path / "store"
    extract(m, out, ExtractConfig(**SETTINGS), part=(0, 2))
    plan_file = out / "_extract" / "plan.json"
    plan = json.loads(plan_file.read_text())
    damage(plan)
    plan_file.write_text(json.dumps(plan))
    with pytest.raises(VidpipeError, match=message):
        finalize(out)
