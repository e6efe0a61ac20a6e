"""The in-process probe (`pyav.probe`) says what the ffmpeg probe says, or declines and leaves the file to it.

Every kind of file extraction meets, each made here by ffmpeg: plain H.264/Xvid/VP9/FFV1/MJPEG videos,
an NTSC rate, an anamorphic (SAR 2:1) WebM, 4:4:4 chroma, variable frame rate with B-frames (whose
packets end before the header's duration), a cut MP4 and a cut AVI, stills, cover art, a thumbnail
first, a display rotation, text and empty files. The reference is `ffmpeg.probe` (an ffmpeg process's
own log); the extraction path that uses the in-process probe must store the same bytes as the one that
does not.
"""

import subprocess

import pytest

from tests.stores.test_extract import _tree_bytes
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io import pyav
from vidpipe.io.ffmpeg import DecodeError, ffmpeg_binary, probe_many
from vidpipe.stores.extract import ExtractConfig, _probe, extract

SRC = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2"]
VFR = "setpts='if(lt(N,50),N/25,2+(N-50)/5)/TB'"
FILES = {  # name -> ffmpeg arguments after -y (the output path is appended)
    "h264.mp4": [*SRC, "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "faststart.mp4": [*SRC, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    "ntsc.mp4": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30000/1001:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "h444.mp4": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=12.5:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv444p"],
    "xvid.avi": [*SRC, "-c:v", "mpeg4"],
    "mjpeg.avi": [*SRC, "-c:v", "mjpeg"],
    "ffv1.mkv": [*SRC, "-c:v", "ffv1"],
    "anamorphic.webm": [*SRC, "-vf", "setsar=2/1", "-c:v", "libvpx-vp9"],
    "vfr.mkv": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2.4", "-vf", VFR, "-fps_mode", "vfr", "-c:v", "libx264",
                "-bf", "3", "-g", "12", "-pix_fmt", "yuv420p"],
    "vfr.mp4": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2.4", "-vf", VFR, "-fps_mode", "vfr", "-c:v", "libx264",
                "-bf", "3", "-g", "12", "-pix_fmt", "yuv420p"],
    "cover.png": ["-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-c:v", "png", "-f", "image2"],
}


def ffmpeg(*args):
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    for name, args in FILES.items():
        ffmpeg(*args, d / name)
    (d / "png_named.mp4").write_bytes((d / "cover.png").read_bytes())
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-i", d / "cover.png", "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "png",
           "-disposition:v:0", "attached_pic", d / "song_with_cover.m4a")
    ffmpeg(*SRC, "-i", d / "cover.png", "-map", "1:v", "-map", "0:v", "-c:v:0", "png", "-c:v:1", "libx264", "-pix_fmt:v:1", "yuv420p",
           d / "thumbnail_first.mkv")
    ffmpeg("-display_rotation", "90", "-i", d / "h264.mp4", "-c", "copy", d / "rotated.mp4")
    for name in ("vfr.mp4", "xvid.avi"):
        data = (d / name).read_bytes()
        (d / f"cut_{name}").write_bytes(data[: len(data) // 2])
    (d / "text.mp4").write_text("not a video\n" * 20)
    (d / "empty.mp4").write_bytes(b"")
    return d


# the files PyAV must answer for itself (the ones extraction meets every day); the others it may decline
ANSWERED = {"h264.mp4", "faststart.mp4", "ntsc.mp4", "h444.mp4", "xvid.avi", "mjpeg.avi", "ffv1.mkv", "anamorphic.webm", "vfr.mkv",
            "vfr.mp4"}


def test_the_in_process_probe_says_what_ffmpeg_says_or_declines(files):
    paths = sorted(files.iterdir())
    answered = set()
    for path, reference in zip(paths, probe_many(paths)):
        info = pyav.probe(path)
        if info is not None:
            assert info == reference, path.name
            answered.add(path.name)
    assert answered == ANSWERED
    by_name = {p.name: r for p, r in zip(paths, probe_many(paths))}
    assert any(by_name[n].packets_end for n in ANSWERED) and by_name["anamorphic.webm"].sar == 2.0  # the cases are what they say
    assert by_name["rotated.mp4"].rotation and by_name["cut_xvid.avi"].damage and by_name["ntsc.mp4"].fps == 29.97


def test_extraction_probes_in_process_and_falls_back_to_ffmpeg(files, monkeypatch):
    from vidpipe.io import ffmpeg as ffmpeg_io
    from vidpipe.stores import extract as extract_mod

    asked = []
    real = ffmpeg_io.probe_many
    monkeypatch.setattr(extract_mod, "probe_many", lambda paths: asked.extend(p.name for p in paths) or real(paths))
    paths = sorted(files.iterdir())
    infos = _probe(paths, None)
    assert set(asked) == {p.name for p in paths} - ANSWERED
    reference = probe_many(paths)
    for info, ref in zip(infos, reference):
        assert (str(info) == str(ref)) if isinstance(ref, DecodeError) else info == ref
    asked.clear()
    _probe(paths, None, in_process=False)  # --backend ffmpeg: every file to ffmpeg
    assert len(asked) == len(paths)


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_a_store_probed_in_process_has_the_bytes_of_one_probed_by_ffmpeg(synth_h264, tmp_path, monkeypatch, fmt):
    from vidpipe.stores import extract as extract_mod

    m = build_manifest("synthetic", synth_h264)
    cfg = ExtractConfig(format=fmt, frames=6, size=32, backend="pyav")
    extract(m, tmp_path / "in_process", cfg)
    monkeypatch.setattr(extract_mod.pyav, "probe", lambda path: None)  # every file declined: the ffmpeg probe answers
    extract(m, tmp_path / "ffmpeg", cfg)
    assert _tree_bytes(tmp_path / "in_process") == _tree_bytes(tmp_path / "ffmpeg")
