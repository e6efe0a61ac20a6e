"""ChunkReader against zarr-python's own read of the same arrays: every row, both codecs, holes and damage."""

import shutil
import warnings

import numpy as np
import pytest

from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.chunks import ChunkReader
from vidpipe.stores.extract import ExtractConfig, extract


@pytest.fixture(scope="module")
def zarr_stores(synth_h264, tmp_path_factory):
    """Raw and JPEG zarr stores, uniform and fps, of a dataset with one unreadable video (a hole)."""
    root = tmp_path_factory.mktemp("holed")
    shutil.copytree(synth_h264, root, dirs_exist_ok=True)
    broken = next((root / "train").iterdir()) / "zz-broken.mp4"
    broken.write_text("not a video\n" * 40)
    m = build_manifest("synthetic", root)
    base = tmp_path_factory.mktemp("zarr_stores")
    modes = {"raw": {}, "jpeg": dict(frame_codec="jpeg"), "raw-fps": dict(fps=15.0), "jpeg-fps": dict(fps=15.0, frame_codec="jpeg")}
    for name, extra in modes.items():
        extract(m, base / name, ExtractConfig(format="zarr", frames=6, size=32, shard_size="40KB", **extra))
    return base


def zarr_rows(array_path):
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # variable-length bytes have no v3 spec yet
        array = zarr.open_array(array_path, mode="r")
        return [array[i] for i in range(array.shape[0])]


@pytest.mark.parametrize("mode", ["raw", "jpeg", "raw-fps", "jpeg-fps"])
def test_every_row_reads_as_zarr_python_reads_it(zarr_stores, mode):
    for split in ("train", "test"):
        path = zarr_stores / mode / f"{split}.zarr" / "frames"
        reader = ChunkReader.open(path)
        assert reader is not None and reader.per_shard < reader.shape[0]  # several shards, so the index is used
        expected = zarr_rows(path)
        for row, want in enumerate(expected):
            got = reader.frames(row)
            assert got.dtype == want.dtype and got.shape == want.shape
            if mode.startswith("jpeg"):
                assert list(got) == list(want)
            else:
                np.testing.assert_array_equal(got, want)
    holes = [row for row, want in enumerate(zarr_rows(zarr_stores / mode / "train.zarr" / "frames"))
             if (want == b"").all() or (want.dtype == np.uint8 and not want.any())]
    assert holes  # the unreadable video's row was read too (as zarr's fill value)


def test_a_damaged_chunk_fails_its_read(zarr_stores, tmp_path):
    for mode in ("raw", "jpeg"):
        copy = tmp_path / mode
        shutil.copytree(zarr_stores / mode, copy)
        shard = next(p for p in sorted((copy / "train.zarr" / "frames" / "c").rglob("*")) if p.is_file())
        data = bytearray(shard.read_bytes())
        data[60] ^= 0x5A  # inside the first chunk
        shard.write_bytes(bytes(data))
        with pytest.raises((ValueError, RuntimeError)):
            ChunkReader.open(copy / "train.zarr" / "frames").frames(0)


def test_a_shard_index_pointing_past_its_file_fails_the_read(zarr_stores, tmp_path):
    """The index is the shard's own bytes: an entry beyond the file (its CRC32C made to match) is a
    damaged chunk, not a giant read."""
    import google_crc32c

    copy = tmp_path / "raw"
    shutil.copytree(zarr_stores / "raw", copy)
    reader = ChunkReader.open(copy / "train.zarr" / "frames")
    shard = reader._shard_file(0)
    data = bytearray(shard.read_bytes())
    entries = 16 * reader.per_shard * reader.shape[1]
    table = np.frombuffer(bytes(data[-entries - 4 : -4]), "<u8").reshape(-1, 2).copy()
    table[0] = (len(data), 2**40)
    body = table.astype("<u8").tobytes()
    data[-entries - 4 :] = body + google_crc32c.value(body).to_bytes(4, "little")
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="ends inside chunk 0"):
        ChunkReader.open(copy / "train.zarr" / "frames").frames(0, [0])


def test_an_array_zarr_python_wrote_in_the_same_layout_reads_alike(tmp_path):
    """The reader follows the zarr spec, not only vidpipe's writer: zarr-python writes per-frame and
    per-video chunks (its default zstd, a partial last shard, frames left at the fill value)."""
    import zarr

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (5, 3, 8, 6, 3), dtype=np.uint8)
    data[1, 2] = 0  # a frame zarr does not write
    for chunks in [(1, 1, 8, 6, 3), (1, 3, 8, 6, 3)]:
        path = tmp_path / f"a{chunks[1]}"
        zarr.create_array(path, shape=data.shape, chunks=chunks, shards=(2, 3, 8, 6, 3), dtype="uint8", fill_value=0)[:] = data
        reader = ChunkReader.open(path)
        assert reader is not None and reader.frame_chunks == (chunks[1] == 1)
        for row in range(5):
            np.testing.assert_array_equal(reader.frames(row), data[row])
            np.testing.assert_array_equal(reader.frames(row, [2, 0, 2]), data[row][[2, 0, 2]])


def test_a_layout_vidpipe_does_not_write_is_left_to_zarr(tmp_path):
    import zarr

    zarr.create_array(tmp_path / "plain", shape=(4, 2, 8, 8, 3), chunks=(1, 2, 8, 8, 3), dtype="uint8")  # no sharding
    zarr.create_array(tmp_path / "two-videos", shape=(4, 2, 8, 8, 3), chunks=(2, 1, 8, 8, 3), shards=(2, 2, 8, 8, 3), dtype="uint8")
    zarr.create_array(tmp_path / "half-frames", shape=(4, 2, 8, 8, 3), chunks=(1, 1, 4, 8, 3), shards=(2, 2, 8, 8, 3), dtype="uint8")
    for name in ("plain", "two-videos", "half-frames", "missing"):
        assert ChunkReader.open(tmp_path / name) is None, name


def test_a_store_begun_with_one_chunk_per_video_is_finished_in_that_layout(tmp_path):
    """Resuming a zarr store an older vidpipe began (per-video chunks): its remaining shards keep the layout
    its array declares, and zarr-python reads them back."""
    import zarr
    from zarr.codecs import ZstdCodec

    from vidpipe.io.decode import ClipSpec
    from vidpipe.stores.writers import Unit, ZarrShard

    rng = np.random.default_rng(1)
    shape = (6, 4, 8, 6, 3)
    zarr.open_group(tmp_path / "train.zarr", mode="a").create_array(  # as writers.zarr_frames_array made it before
        "frames", shape=shape, dtype="uint8", chunks=(1, *shape[1:]), shards=(3, *shape[1:]),
        compressors=ZstdCodec(level=1, checksum=True), fill_value=0)
    clips = rng.integers(0, 255, shape, dtype=np.uint8)
    for index in (0, 1):
        shard = ZarrShard(tmp_path, Unit("train", index, 3 * index, records=(None,) * 3), ClipSpec(4, 8, 6))
        assert not shard.frame_chunks
        for position in range(3):
            shard.add(position, None, clips[3 * index + position], {})
        assert shard.commit()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "train.zarr" / "frames", mode="r")[:], clips)
    reader = ChunkReader.open(tmp_path / "train.zarr" / "frames")
    assert not reader.frame_chunks
    np.testing.assert_array_equal(reader.frames(4, [3, 1]), clips[4][[3, 1]])
