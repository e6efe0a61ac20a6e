"""Frame folders (a video kept as numbered images) against the same frames as a video: PNG frames and a
lossless PNG video, JPEG frames and an MJPEG video holding those very JPEGs (a stream copy), through
extraction in both modes; gaps and unreadable images are one recorded failure each."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from vidpipe.datasets.manifest import Manifest, Record
from vidpipe.io import frames
from vidpipe.io.ffmpeg import DecodeError, ffmpeg_binary
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract

FPS = 12


def moving_frames(t=26, h=90, w=124, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, (2 * k, 3 * k), axis=(0, 1)) for k in range(t)])


def write_folder(folder, clip, ext):
    folder.mkdir(parents=True)
    for k, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{k + 1:05d}.{ext}", quality=90)


def as_video(folder, out, ext, codec):
    """The folder's images as one video: PNG re-encoded losslessly (png codec), JPEG copied bit for bit (MJPEG)."""
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-framerate", str(FPS), "-i", str(folder / f"%05d.{ext}"),
                    "-c:v", codec, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """root/{png,jpg}/<class>/<id>/ frame folders and root/videos/{png,jpg}/<class>/<id>.mkv made from them."""
    root = tmp_path_factory.mktemp("frames")
    for ext, codec in (("png", "png"), ("jpg", "copy")):
        for k, cls in enumerate(("left", "right")):
            for j in range(2):
                folder = root / ext / cls / f"v{j}"
                write_folder(folder, moving_frames(t=20 + 7 * j, seed=10 * k + j), ext)
                (root / "videos" / ext / cls).mkdir(parents=True, exist_ok=True)
                as_video(folder, root / "videos" / ext / cls / f"v{j}.mkv", ext, codec)
    return root


def manifest(root, ext, folders: bool):
    records = [Record(f"{cls}/v{j}", f"{ext}/{cls}/v{j}" if folders else f"videos/{ext}/{cls}/v{j}.mkv", k, cls, "train" if j == 0 else "test")
               for k, cls in enumerate(("left", "right")) for j in range(2)]
    return Manifest("frames-test", str(root), ["left", "right"], records, frame_fps=FPS if folders else None)


@pytest.mark.parametrize("ext", ["png", "jpg"])
@pytest.mark.parametrize("mode", [dict(frames=8), dict(fps=6.0, max_seconds=3.0)], ids=["uniform", "fps"])
def test_a_frame_folder_stores_the_pixels_of_the_same_frames_as_a_video(sources, tmp_path, ext, mode):
    stores = {}
    for kind, folders in (("folders", True), ("video", False)):
        extract(manifest(sources, ext, folders), tmp_path / kind, ExtractConfig(size=48, workers=1, **mode))
        stores[kind] = Store.open(tmp_path / kind)
    for split in ("train", "test"):
        a = {vid: (clip, label) for vid, clip, label, _ in stores["folders"].samples(split)}
        b = {vid: (clip, label) for vid, clip, label, _ in stores["video"].samples(split)}
        assert a.keys() == b.keys() and len(a) == 2
        for vid in a:
            assert a[vid][1] == b[vid][1]
            np.testing.assert_array_equal(a[vid][0], b[vid][0])
    folders_index = stores["folders"].index
    assert folders_index["backends"] == {"frames": 4} and folders_index["failures"] == []
    videos = [v for p in sorted((tmp_path / "folders" / "_extract" / "parts").glob("*.json")) for v in json.loads(p.read_text())["videos"]]
    assert sorted(v["num_frames"] for v in videos) == [20, 20, 27, 27] and {v["fps"] for v in videos} == {FPS}


def test_a_gap_an_unreadable_image_or_a_change_of_size_is_one_recorded_failure(sources, tmp_path):
    root = tmp_path / "root"
    good = moving_frames(t=16)
    for name in ("ok", "gap", "broken", "resized", "mixed"):
        write_folder(root / "c" / name, good, "png")
    (root / "c" / "gap" / "00007.png").unlink()
    (root / "c" / "broken" / "00009.png").write_bytes(b"not a png")
    Image.fromarray(good[0][:40, :60]).save(root / "c" / "resized" / "00016.png")
    (root / "c" / "mixed" / "img_00001.png").write_bytes((root / "c" / "mixed" / "00001.png").read_bytes())
    records = [Record(n, f"c/{n}", 0, "c", "train") for n in ("ok", "gap", "broken", "resized", "mixed")]
    index = extract(Manifest("t", str(root), ["c"], records, frame_fps=FPS), tmp_path / "s",
                    ExtractConfig(frames=16, size=32, workers=1, max_failures=1.0)).summary
    reasons = {f["id"]: f["reason"] for f in index["failures"]}
    assert index["splits"]["train"]["count"] == 1 and set(reasons) == {"gap", "broken", "resized", "mixed"}
    assert "frame 7 is missing" in reasons["gap"] and "00009.png is not a readable image" in reasons["broken"]
    assert "holds one size" in reasons["resized"] and "mixes namings" in reasons["mixed"]


def test_a_folder_in_a_manifest_of_video_files_is_a_failure_that_names_frame_fps(sources, tmp_path):
    m = manifest(sources, "png", folders=True)
    m.frame_fps = None
    index = extract(m, tmp_path / "s", ExtractConfig(frames=4, size=32, workers=1, max_failures=1.0)).summary
    assert index["splits"]["train"]["count"] == 0 and all("frame_fps" in f["reason"] for f in index["failures"])


def test_probe_reads_only_the_first_image(tmp_path):
    write_folder(tmp_path / "v", moving_frames(t=5), "jpg")
    info = frames.probe(tmp_path / "v", 12.5)
    assert (info.codec, info.width, info.height, info.num_frames, info.fps) == ("mjpeg", 124, 90, 5, 12.5)
    assert info.duration == pytest.approx(5 / 12.5)
    with pytest.raises(DecodeError, match="no numbered images"):
        frames.probe(tmp_path, 12)


def test_cli_extracts_an_sthv1_tree_of_jpeg_frames(tmp_path):
    """The official Something-Something V1 layout through `vidpipe extract --dataset sthv1`, at 12 fps by default
    and at the rate --frame-fps states."""
    from click.testing import CliRunner

    from vidpipe.cli.main import cli

    root = tmp_path / "sthv1"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "something-something-v1-labels.csv").write_text("Holding something\nPushing something\n")
    (root / "annotations" / "something-something-v1-train.csv").write_text("11;Holding something\n12;Pushing something\n")
    (root / "annotations" / "something-something-v1-validation.csv").write_text("21;Pushing something\n")
    for k, vid in enumerate(("11", "12", "21")):
        write_folder(root / "20bn-something-something-v1" / vid, moving_frames(t=14 + k, seed=k), "jpg")
    runner = CliRunner()
    for fps, out in ((None, tmp_path / "s12"), ("24", tmp_path / "s24")):
        res = runner.invoke(cli, ["extract", "--dataset", "sthv1", "--root", str(root), "--out", str(out), "--frames", "4", "--size", "32",
                                  "--workers", "1", *(["--frame-fps", fps] if fps else [])])
        assert res.exit_code == 0, res.output
        index = Store.open(out).index
        assert {s: e["count"] for s, e in index["splits"].items()} == {"train": 2, "val": 1}
        assert index["splits"]["train"]["source_seconds"] == pytest.approx((14 + 15) / (float(fps) if fps else 12.0), abs=1e-3)
    res = runner.invoke(cli, ["extract", "--dataset", "hmdb51", "--root", str(root), "--frame-fps", "12", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--frame-fps applies to sthv1, rawframes, not hmdb51" in res.output
