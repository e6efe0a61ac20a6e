"""The shard writers' own tar and .npy framing against the libraries that define them: webdataset's
TarWriter (Python's tarfile) and numpy's np.save, byte for byte."""

import io

import numpy as np
import pytest
import webdataset as wds

from vidpipe.stores.writers import TarStream, npy_parts


def _np_save(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("array", [np.arange(2 * 5 * 7 * 3, dtype=np.uint8).reshape(2, 5, 7, 3),
                                   np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],  # not contiguous
                                   np.zeros((0, 4, 4, 3), np.uint8)], ids=["clip", "strided", "empty"])
def test_npy_parts_are_what_np_save_writes(array):
    header, data = npy_parts(array)
    assert header + bytes(data) == _np_save(array)


def test_tar_stream_writes_the_bytes_of_webdataset_tar_writer():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (3, 5, 7, 3), np.uint8)
    samples = [  # a long unicode key (a PAX header), a JPEG sample, a member whose size is a multiple of 512
        {"__key__": "k" * 120 + "é", "frames.npy": _np_save(clip), "cls": b"3", "json": b'{"id": "x"}'},
        {"__key__": "clip%2E1", **{f"{t:04d}.jpg": rng.bytes(100 + t) for t in range(3)}, "cls": b"0", "json": b"{}"},
        {"__key__": "aligned", "cls": b"1", "json": b"x" * 1024},
    ]
    reference = io.BytesIO()
    writer = wds.TarWriter(reference, mtime=0, user="vidpipe", group="vidpipe", mode=0o644)
    for sample in samples:
        writer.write(sample)
    writer.close()
    ours = io.BytesIO()
    tar = TarStream(ours)
    for sample in samples:
        key = sample["__key__"]
        for suffix in sorted(k for k in sample if k != "__key__"):
            parts = npy_parts(clip) if suffix == "frames.npy" else (sample[suffix],)
            tar.add(f"{key}.{suffix}", *parts)
    tar.close()
    assert ours.getvalue() == reference.getvalue() and tar.offset == len(reference.getvalue())
