"""Real-world files that are not plain videos, or plain videos that look odd: each judged on purpose.

- variable frame rate with B-frames (Matroska and MP4): valid, stored whole (packets end where the
  largest pts + duration says, not where the last packet in decode order does);
- a PNG or JPEG named .mp4, and an audio file whose only picture is its cover art: recorded failures
  ("a still image, not a video"), stored as one repeated frame only with --allow-stills;
- a file whose first video stream is a one-frame thumbnail: its real video is the one stored.
Every file is made here by ffmpeg; the reference for the stored frames is a plain ffmpeg decode.
"""

import subprocess

import numpy as np
import pytest

from vidpipe.datasets.adapters import build_manifest
from vidpipe.io.decode import ClipSpec, check_usable, decode_clip
from vidpipe.io.ffmpeg import DecodeError, ffmpeg_binary, probe, read_all_frames
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract

VFR = "setpts='if(lt(N,50),N/25,2+(N-50)/5)/TB'"  # 2 s at 25 fps, then 2 s at 5 fps


def ffmpeg(*args):
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("real_world")
    src = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2.4"]
    for ext in ("mkv", "mp4"):  # x264 with B-frames: packets come in decode order, not presentation order
        ffmpeg(*src, "-vf", VFR, "-fps_mode", "vfr", "-c:v", "libx264", "-bf", "3", "-g", "12", "-pix_fmt", "yuv420p", d / f"vfr.{ext}")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-c:v", "png", "-f", "image2", d / "cover.png")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-f", "image2", d / "still.jpg")
    (d / "png_named.mp4").write_bytes((d / "cover.png").read_bytes())
    (d / "jpeg_named.mp4").write_bytes((d / "still.jpg").read_bytes())
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-i", d / "cover.png", "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "png",
           "-disposition:v:0", "attached_pic", d / "song_with_cover.m4a")
    # Matroska keeps the order given: a one-frame PNG stream first, then the video
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-i", d / "cover.png", "-map", "1:v", "-map", "0:v",
           "-c:v:0", "png", "-c:v:1", "libx264", "-pix_fmt:v:1", "yuv420p", d / "thumbnail_first.mkv")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", d / "plain.mkv")
    return d


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_a_variable_frame_rate_file_with_b_frames_is_whole(files, ext):
    info = probe(files / f"vfr.{ext}")
    assert info.num_frames == 60
    if info.packets_end is not None:  # measured when the packet count looks short for duration x nominal fps
        assert info.packets_end == pytest.approx(info.duration, abs=0.05)
    check_usable(info)  # not "truncated"
    clip, meta = decode_clip(files / f"vfr.{ext}", ClipSpec(6, 48, 64), decoder="pyav")
    reference = read_all_frames(files / f"vfr.{ext}")
    assert len(reference) == 60
    np.testing.assert_array_equal(clip, reference[meta["indices"]])


@pytest.mark.parametrize("name, says", [("png_named.mp4", "a still image (png)"), ("jpeg_named.mp4", "a still image (mjpeg)"),
                                        ("song_with_cover.m4a", "cover art")])
def test_pictures_are_not_videos(files, name, says):
    info = probe(files / name)
    with pytest.raises(DecodeError, match=r"not a video \(pass --allow-stills"):
        check_usable(info)
    assert says in info.still


def test_a_thumbnail_first_file_stores_its_video(files):
    info = probe(files / "thumbnail_first.mkv")
    assert (info.stream, info.codec, info.num_frames, info.still) == (1, "h264", 50, None)
    for decoder in ("pyav", "ffmpeg"):
        thumb, _ = decode_clip(files / "thumbnail_first.mkv", ClipSpec(8, 48, 64), decoder=decoder)
        plain, _ = decode_clip(files / "plain.mkv", ClipSpec(8, 48, 64), decoder=decoder)
        np.testing.assert_array_equal(thumb, plain)


def test_extraction_records_stills_as_failures_unless_allowed(files, tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("png_named.mp4", "song_with_cover.m4a", "vfr.mkv", "thumbnail_first.mkv"):
            dest = root / split / "things" / f"{split}_{name.replace('.m4a', '.mp4')}"  # the folder adapter takes video extensions
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((files / name).read_bytes())
    manifest = build_manifest("folder", root)
    report = extract(manifest, tmp_path / "s", ExtractConfig(frames=4, size=32, max_failures=1.0))
    reasons = {f["path"].split("/")[-1]: f["reason"] for f in report.summary["failures"] if f["split"] == "train"}
    assert set(reasons) == {"train_png_named.mp4", "train_song_with_cover.mp4"}, reasons
    assert "a still image (png), not a video" in reasons["train_png_named.mp4"] and "cover art" in reasons["train_song_with_cover.mp4"]
    stored = {meta["path"].split("/")[-1] for _, _, _, meta in Store.open(tmp_path / "s").samples("train")}
    assert stored == {"train_vfr.mkv", "train_thumbnail_first.mkv"}

    allowed = extract(manifest, tmp_path / "a", ExtractConfig(frames=4, size=32, allow_stills=True))
    assert allowed.summary["failures"] == [] and allowed.summary["settings"]["allow_stills"] is True
    got = {meta["path"].split("/")[-1]: (clip, meta) for _, clip, _, meta in Store.open(tmp_path / "a").samples("test")}
    for name in ("test_png_named.mp4", "test_song_with_cover.mp4"):  # one frame, looped to T
        clip, meta = got[name]
        assert meta["num_frames"] == 1 and meta["looped"] and clip.shape == (4, 32, 42, 3)
        np.testing.assert_array_equal(clip, np.repeat(clip[:1], 4, axis=0))
        assert clip.std() > 10  # the picture, not a blank frame
