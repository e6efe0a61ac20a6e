"""shards.npy_frames_shape: what numpy's own reader says of a frames.npy header, whether the header is
met for the first time (numpy parses it) or again (looked up by its bytes)."""

import io

import numpy as np
import pytest

from vidpipe.errors import VidpipeError
from vidpipe.stores.shards import npy_frames_shape


def _npy(array, version):
    fh = io.BytesIO()
    np.lib.format.write_array(fh, array, version=version)
    return fh.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_shapes_and_data_start_equal_numpys_first_time_and_again(version):
    arrays = [np.zeros((32, 128, 170, 3), np.uint8), np.zeros((7, 2, 3, 3), np.uint8), np.zeros((32, 128, 171, 3), np.uint8)]
    for array in arrays * 2:  # the second pass answers from the cache
        data = b"junk" + _npy(array, version)
        reference = io.BytesIO(data)
        reference.seek(4)
        np.lib.format.read_magic(reference)
        shape, _, _ = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(reference)
        fh = io.BytesIO(data)
        fh.seek(4)
        assert npy_frames_shape(fh, "x") == shape == array.shape
        assert fh.tell() == reference.tell()  # positioned at the first frame


def test_other_dtypes_and_fortran_order_are_refused_every_time():
    for array in (np.zeros((2, 4, 4, 3), np.float32), np.asfortranarray(np.zeros((2, 4, 4, 3), np.uint8))):
        for _ in range(2):
            with pytest.raises(VidpipeError, match="not C-order uint8"):
                npy_frames_shape(io.BytesIO(_npy(array, (1, 0))), "shard a.tar: sample 'v'")


def test_a_damaged_header_is_one_line_naming_the_sample():
    data = bytearray(_npy(np.zeros((2, 4, 4, 3), np.uint8), (1, 0)))
    data[20:30] = b"!!!!!!!!!!"
    with pytest.raises(VidpipeError, match="shard a.tar: sample 'v' has a damaged frames.npy"):
        npy_frames_shape(io.BytesIO(bytes(data)), "shard a.tar: sample 'v'")


def test_a_header_length_past_any_header_is_refused_without_reading_it():
    class Reads(io.BytesIO):
        largest = 0

        def read(self, n=-1):
            data = super().read(n)
            Reads.largest = max(Reads.largest, len(data))
            return data

    data = bytearray(_npy(np.zeros((2, 4, 4, 3), np.uint8), (2, 0)))
    data[8:12] = (1 << 31).to_bytes(4, "little")  # a 2 GB header, as a flipped byte could claim
    with pytest.raises(VidpipeError, match="damaged frames.npy"):
        npy_frames_shape(Reads(bytes(data) + bytes(1 << 20)), "shard a.tar: sample 'v'")  # the shard's next megabyte
    assert Reads.largest <= 12
