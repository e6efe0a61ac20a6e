"""Feature caches against a direct torchvision forward with the weights' own transforms."""

import json

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import save_file

from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, FeatureStore, cache_features
from vidpipe.stores.clips import Store

# float16 storage of features of magnitude ~1: half-precision rounding (2^-11 relative) plus float32
# accumulation-order differences; anything wrong (transform, layer, frame order) is off by far more.
RTOL, ATOL = 2e-3, 2e-3


@pytest.fixture(scope="module")
def clip_store(synth_h264, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "store"
    extract(build_manifest("synthetic", synth_h264), out, ExtractConfig(format="zarr", frames=4, size=48))
    return out


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(123)
    net = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18-local.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_frame_features_equal_a_torchvision_forward(clip_store, resnet18_file, tmp_path):
    report = cache_features(clip_store, tmp_path / "f", FeatureConfig(backbone="resnet18", weights=str(resnet18_file), tokens=True))
    s = report.summary
    assert s["features"]["shape"] == [4, 512] and s["tokens"]["shape"] == [4, 512, 7, 7] and s["dtype"] == "float16"
    assert s["weights"]["id"] == "file:resnet18-local.safetensors" and len(s["weights"]["sha256"]) == 64 and not s["random_weights"]
    assert s["preprocess"]["source"] == "ResNet18_Weights.IMAGENET1K_V1" and s["preprocess"]["crop_size"] == [224, 224]

    reference = torchvision.models.resnet18()  # independent: torchvision's model, its transforms, its avgpool
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(str(resnet18_file)))
    reference.fc = torch.nn.Identity()
    reference.eval()
    transform = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    arrays = FeatureStore.open(tmp_path / "f").arrays("test")
    ids = list(arrays["ids"][:])
    stored = {vid: clip for vid, clip, _, _ in Store.open(clip_store).samples("test")}
    for i in (0, len(ids) - 1):
        frames = torch.from_numpy(stored[ids[i]]).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        with torch.no_grad():
            expected = reference(transform(frames)).numpy()
        got = arrays["features"][i].astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * np.abs(expected).max())
    assert arrays["tokens"].shape == (10, 4, 512, 7, 7)
    assert list(arrays["labels"][:]) == [label for _, _, label, _ in Store.open(clip_store).samples("test")]


def test_clip_features_equal_a_torchvision_r2plus1d_forward(synth_h264, tmp_path):
    m = build_manifest("synthetic", synth_h264)
    m.records = [r for r in m.records if r.id.endswith("_0000")][:2]  # R(2+1)D on a CPU: keep it to two clips
    extract(m, tmp_path / "store", ExtractConfig(format="webdataset", frames=16, size=64))
    torch.manual_seed(7)
    net = torchvision.models.video.r2plus1d_18()
    weights = tmp_path / "r2p1d.pth"
    torch.save(net.state_dict(), weights)
    report = cache_features(tmp_path / "store", tmp_path / "f", FeatureConfig(backbone="r2plus1d_18", weights=str(weights), tokens=True))
    assert report.summary["features"]["shape"] == [1, 512] and report.summary["tokens"]["shape"] == [1, 512, 2, 7, 7]
    net.fc = torch.nn.Identity()
    net.eval()
    transform = torchvision.models.video.R2Plus1D_18_Weights.DEFAULT.transforms()  # (T, C, H, W) -> (C, T, H, W)
    arrays = FeatureStore.open(tmp_path / "f").arrays("train")
    vid, clip, _, _ = next(Store.open(tmp_path / "store").samples("train"))
    i = list(arrays["ids"][:]).index(vid)
    with torch.no_grad():
        expected = net(transform(torch.from_numpy(clip).permute(0, 3, 1, 2)).unsqueeze(0)).numpy()[0]
    got = arrays["features"][i, 0].astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * np.abs(expected).max())


def test_resume_and_refusals(clip_store, resnet18_file, tmp_path, monkeypatch):
    import zarr

    from vidpipe.stores import features as features_mod

    monkeypatch.setattr(features_mod, "UNIT", 8)  # 20 train videos -> units of 8, 8 and 4
    cfg = FeatureConfig(backbone="resnet18", weights="random")
    first = cache_features(clip_store, tmp_path / "f", cfg)
    assert first.summary["random_weights"] and first.summary["weights"]["id"] == "random"
    again = cache_features(clip_store, tmp_path / "f", cfg)
    assert again.nothing_to_do
    # an interrupted run: the middle unit was never recorded and its rows never written; resume redoes it alone
    parts = sorted((tmp_path / "f" / "_cache" / "parts").glob("train-*.json"))
    assert len(parts) == 3
    before = FeatureStore.open(tmp_path / "f").arrays("train")["features"][:]
    parts[1].unlink()
    zarr.open_group(tmp_path / "f" / "train.zarr", mode="a")["features"][8:16] = 0
    resumed = cache_features(clip_store, tmp_path / "f", cfg)
    assert not resumed.nothing_to_do and resumed.videos == 8  # the two finished units were skipped
    np.testing.assert_array_equal(FeatureStore.open(tmp_path / "f").arrays("train")["features"][:], before)
    with pytest.raises(VidpipeError, match="made differently .*weights.*--overwrite"):
        cache_features(clip_store, tmp_path / "f", FeatureConfig(backbone="resnet18", weights=str(resnet18_file)))
    other = cache_features(clip_store, tmp_path / "g", FeatureConfig(backbone="resnet18", weights=str(resnet18_file)))
    with pytest.raises(VidpipeError, match="made differently \\(weights\\)"):
        FeatureStore.open(tmp_path / "f").require_same(FeatureStore.open(tmp_path / "g"))
    assert other.summary["source_store"]["clip"]["frames"] == 4


def test_wrong_checkpoint_and_offline_errors(clip_store, tmp_path):
    wrong = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet50().state_dict().items()}, str(wrong))
    runner = CliRunner()
    res = runner.invoke(cli, ["cache-features", "--store", str(clip_store), "--backbone", "resnet18", "--weights", str(wrong), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "for torchvision resnet18 does not fit" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["cache-features", "--store", str(clip_store), "--backbone", "resnet18", "--weights", "NOPE", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "IMAGENET1K_V1" in res.output
    res = runner.invoke(cli, ["cache-features", "--store", str(tmp_path), "--backbone", "resnet18", "--weights", "random", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not a finished vidpipe store" in res.output


def test_offline_named_weights_name_the_fix(monkeypatch, clip_store, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    res = CliRunner().invoke(cli, ["cache-features", "--store", str(clip_store), "--backbone", "resnet18", "--weights", "IMAGENET1K_V1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--weights IMAGENET1K_V1=PATH" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_store_json_records_provenance(clip_store, tmp_path):
    cache_features(clip_store, tmp_path / "f", FeatureConfig(backbone="resnet18", weights="random", dtype="float32"))
    index = json.loads((tmp_path / "f" / "store.json").read_text())
    assert index["format"] == "vidpipe-features" and index["dtype"] == "float32" and index["kind"] == "frame"
    assert index["source_store"]["store_json_sha256"] and index["classes"] == Store.open(clip_store).classes
    assert index["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(VidpipeError, match="not a feature store"):
        FeatureStore.open(clip_store).index  # noqa: B018  - a clip store


def test_random_backbone_weights_leave_the_callers_rng_alone():
    from vidpipe.models.backbones import build_backbone

    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = build_backbone("resnet18", "random")[0]
    assert torch.equal(torch.rand(4), expected)  # the caller's stream goes on as if nothing had been built
    second = build_backbone("resnet18", "random")[0]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))  # still the same weights


def test_a_named_torchvision_file_keeps_its_preprocessing_and_its_published_hash(tmp_path, monkeypatch):
    """cache-features --weights NAME=PATH: a local copy of torchvision's NAME keeps NAME's preprocessing (resnet50
    V1: resize 256, where the architecture's DEFAULT, V2, resizes to 232) and must have the sha256 torchvision
    published in the file's name."""
    from vidpipe.files import sha256_file
    from vidpipe.models.backbones import resolve_weights
    from vidpipe.models.weights import Weights

    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    named = tmp_path / "resnet50-0676ba61.pth"  # torchvision's name for IMAGENET1K_V1, but other bytes
    named.write_bytes(path.read_bytes())
    with pytest.raises(VidpipeError, match="is not ResNet50_Weights.IMAGENET1K_V1: its sha256 starts .*the published file's 0676ba61"):
        resolve_weights("resnet50", f"IMAGENET1K_V1={named}")
    # the real file cannot be fetched here: stand in for it by making its published hash this file's
    monkeypatch.setattr(Weights, "published_sha256", lambda record: sha256_file(path)[:8])
    _, info, pre = resolve_weights("resnet50", f"IMAGENET1K_V1={path}")
    assert pre.resize_size == (256,) and pre.source == "ResNet50_Weights.IMAGENET1K_V1" and info["tag"] == "IMAGENET1K_V1"
    _, bare, pre = resolve_weights("resnet50", str(path))
    assert pre.resize_size == (232,) and "tag" not in bare  # a bare file: the DEFAULT's, as before


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "r2plus1d_18"])
def test_backbone_weights_are_weights_records_with_torchvision_preprocessing(arch):
    """Every torchvision weights of a backbone is a vidpipe Weights record; the preprocessing the feature
    store records from it is torchvision's own transforms(), field by field."""
    from vidpipe.models.backbones import Preprocess, backbone_weights

    enum = torchvision.models.get_model_weights(arch)
    records = backbone_weights(arch)
    assert [w.tag for w in records] == [enum.DEFAULT.name] + [w.name for w in enum if w is not enum.DEFAULT]
    for record in records:
        tv = enum[record.tag].transforms()
        pre = Preprocess.of(record)
        assert list(pre.resize_size) == list(tv.resize_size) and pre.crop_size == (tv.crop_size[0], tv.crop_size[-1])
        assert pre.mean == tuple(tv.mean) and pre.std == tuple(tv.std)
        assert pre.source == f"{type(enum[record.tag]).__name__}.{record.tag}" and record.num_classes == len(enum[record.tag].meta["categories"])
        assert record.published_sha256() and enum[record.tag].url.endswith(f"-{record.published_sha256()}.pth")


def test_offline_backbone_weights_say_how_to_pass_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    from vidpipe.models.backbones import resolve_weights

    with pytest.raises(VidpipeError, match=r"could not fetch R2Plus1D_18_Weights.KINETICS400_V1 .*download https://.*KINETICS400_V1=PATH"):
        resolve_weights("r2plus1d_18", "DEFAULT")
