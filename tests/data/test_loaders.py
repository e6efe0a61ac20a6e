"""Loaders from stores: both formats agree, augmentation keeps shapes, DDP splits cover the data."""

import collections

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TVF

from vidpipe.data.augment import AugmentConfig, DeviceTransform
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.data.loaders import ClipConfig, WebDatasetClips, ZarrClips, clip_loader
from vidpipe.data.sampling import Sampling
from vidpipe.stores.clips import Store


@pytest.fixture(scope="module")
def stores(synth_h264, tmp_path_factory):
    m = build_manifest("synthetic", synth_h264)
    base = tmp_path_factory.mktemp("loader_stores")
    for fmt in ("webdataset", "zarr"):  # small shards: several per split
        extract(m, base / fmt, ExtractConfig(format=fmt, frames=16, size=48, shard_size="300KB"))
    return Store.open(base / "webdataset"), Store.open(base / "zarr")


def items_by_id(dataset):
    return {it["ids"]: it for it in (dataset[i] for i in range(len(dataset)))} if isinstance(dataset, ZarrClips) \
        else {it["ids"]: it for it in dataset}


def test_formats_yield_the_same_clip_for_the_same_id_and_seed(stores):
    wds_store, zarr_store = stores
    cfg = ClipConfig(sampling=Sampling.tsn(8), train=True, augment=AugmentConfig(size=32), seed=3)
    a, b = items_by_id(WebDatasetClips(wds_store, "train", cfg)), items_by_id(ZarrClips(zarr_store, "train", cfg))
    assert a.keys() == b.keys() and len(a) == 20
    for vid in a:
        np.testing.assert_array_equal(a[vid]["clips"], b[vid]["clips"])
        assert a[vid]["labels"] == b[vid]["labels"] and a[vid]["flips"] == b[vid]["flips"]
        np.testing.assert_array_equal(a[vid]["boxes"], b[vid]["boxes"])
    other = items_by_id(ZarrClips(zarr_store, "train", ClipConfig(sampling=Sampling.tsn(8), seed=4)))
    assert any(not np.array_equal(other[v]["clips"], b[v]["clips"]) for v in b)  # the seed matters


def test_clip_is_the_stored_frames_at_the_sampled_indices(stores):
    _, zarr_store = stores
    stored = {vid: frames for vid, frames, _, _ in zarr_store.samples("test")}
    cfg = ClipConfig(sampling=Sampling(4, 2, 3), train=False)
    for vid, it in items_by_id(ZarrClips(zarr_store, "test", cfg)).items():
        # 16 stored frames, 3 clips of 4 frames 2 apart: max_offset 8 -> offsets 0, 4, 8
        expected = stored[vid][[[0, 2, 4, 6], [4, 6, 8, 10], [8, 10, 12, 14]]]
        np.testing.assert_array_equal(it["clips"], expected)


def test_augmentation_keeps_shapes_and_dtype_and_flips_labels(stores):
    _, zarr_store = stores
    flip_map = {i: i ^ 1 for i in range(10)}  # partner classes swap under a flip
    cfg = ClipConfig(sampling=Sampling.tsn(8), train=True, augment=AugmentConfig(size=32), flip_map=flip_map)
    ds = ZarrClips(zarr_store, "train", cfg)
    items = [ds[i] for i in range(len(ds))]
    flipped = [it for it in items if it["flips"]]
    assert 0 < len(flipped) < len(items)
    for it, row in zip(items, ds.labels):
        assert it["labels"] == (flip_map[int(row)] if it["flips"] else int(row))
    batch = next(iter(clip_loader(zarr_store, "train", cfg, batch_size=4, workers=0)))
    assert batch["clips"].dtype == torch.uint8 and batch["clips"].shape == (4, 1, 8, 48, 64, 3)
    x = DeviceTransform(cfg.augment).train(batch["clips"], batch["boxes"], batch["flips"])
    assert x.shape == (4, 3, 8, 32, 32) and x.dtype == torch.float32
    # a flip on the device mirrors what no flip gives
    clips, boxes = batch["clips"][:1], batch["boxes"][:1]
    plain = DeviceTransform(cfg.augment).train(clips, boxes, torch.tensor([False]))
    mirrored = DeviceTransform(cfg.augment).train(clips, boxes, torch.tensor([True]))
    torch.testing.assert_close(plain.flip(-1), mirrored)


def test_test_views_and_three_crops_match_torchvision(stores):
    """Test-time views against torchvision's own resize/crop/normalize on the same uint8 frames, with
    mmaction2's ThreeCrop offsets (0, step, 2 * step along the long side) and its floor-centred crop."""
    _, zarr_store = stores
    aug = AugmentConfig(size=32, test_short_side=40, test_crop="three")
    cfg = ClipConfig(sampling=Sampling(4, 2, 3), train=False, augment=aug)
    batch = next(iter(clip_loader(zarr_store, "test", cfg, batch_size=2, workers=0)))
    clips = batch["clips"]
    assert clips.shape == (2, 3, 4, 48, 64, 3)
    x = DeviceTransform(aug).test(clips)
    assert x.shape == (2 * 3 * 3, 3, 4, 32, 32)  # videos x clips x crops
    x = x.view(2, 3, 3, 3, 4, 32, 32)
    for b in range(2):
        for v in range(3):
            frames = clips[b, v].permute(0, 3, 1, 2)  # (T, 3, 48, 64)
            resized = TVF.resize(frames, [40], antialias=True)  # short side 40 -> 40 x 53
            assert resized.shape[-2:] == (40, 53)
            step = (53 - 32) // 2
            for c, left in enumerate((0, step, 2 * step)):
                crop = TVF.crop(resized, (40 - 32) // 2, left, 32, 32)
                ref = TVF.normalize(crop.float() / 255, list(aug.mean), list(aug.std)).permute(1, 0, 2, 3)  # (3, T, 32, 32)
                torch.testing.assert_close(x[b, v, c], ref, rtol=0, atol=1e-5)
    centre = DeviceTransform(AugmentConfig(size=32, test_short_side=40)).test(clips[:1, :1])
    ref = TVF.center_crop(TVF.resize(clips[0, 0].permute(0, 3, 1, 2), [40], antialias=True), [32, 32])
    ref = TVF.normalize(ref.float() / 255, list(aug.mean), list(aug.std)).permute(1, 0, 2, 3)
    torch.testing.assert_close(centre[0], ref, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores, on purpose: an odd split
def test_webdataset_with_several_workers_yields_every_clip_once_in_len_batches(stores):
    wds_store, _ = stores
    assert len(wds_store.shard_paths("train")) >= 3
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=True, seed=1)
    for workers in (2, 3):
        loader = clip_loader(wds_store, "train", cfg, batch_size=3, workers=workers)
        batches = [b["ids"] for b in loader]
        ids = [i for b in batches for i in b]
        assert len(ids) == 20 and len(set(ids)) == 20  # 18 of 20 once: each worker's tail was cut off
        assert len(batches) == len(loader) == 7 and all(len(b) == 3 for b in batches[:-1])


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_two_ranks_cover_every_sample_once(stores, fmt):
    store = stores[0] if fmt == "webdataset" else stores[1]
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=(fmt == "zarr"))  # WebDataset eval split: by shard
    seen = collections.Counter()
    for rank in range(2):
        for batch in clip_loader(store, "train", cfg, batch_size=3, workers=0, rank=rank, world_size=2):
            seen.update(batch["ids"])
    assert len(seen) == 20 and set(seen.values()) == {1}


def test_resampled_ranks_get_equal_batches_even_with_fewer_shards_than_workers(synth_h264, tmp_path):
    m = build_manifest("synthetic", synth_h264)
    extract(m, tmp_path / "one", ExtractConfig(format="webdataset", frames=8, size=32))
    wds_store = Store.open(tmp_path / "one")
    assert len(wds_store.shard_paths("test")) == 1  # fewer shards than ranks x workers
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=True)
    counts = []
    for rank in range(2):
        loader = clip_loader(wds_store, "test", cfg, batch_size=2, workers=2, rank=rank, world_size=2)
        counts.append(sum(1 for _ in loader))
    assert counts == [len(loader)] * 2 == [3, 3]  # ceil(10 / (2 ranks x 2))


def test_zarr_batches_identical_at_any_worker_count(stores):
    _, zarr_store = stores
    cfg = ClipConfig(sampling=Sampling.tsn(8), train=True, seed=7)

    def batches(workers):
        loader = clip_loader(zarr_store, "train", cfg, batch_size=4, workers=workers)
        loader.set_epoch(2)
        return [(b["ids"], b["clips"], b["boxes"]) for b in loader]

    a, b = batches(0), batches(2)
    assert [x[0] for x in a] == [x[0] for x in b]
    for (_, ca, ba), (_, cb, bb) in zip(a, b):
        assert torch.equal(ca, cb) and torch.equal(ba, bb)
    loader = clip_loader(zarr_store, "train", cfg, batch_size=4, workers=0)
    loader.set_epoch(3)
    assert [x["ids"] for x in loader] != [x[0] for x in a]  # a new epoch reshuffles


def _overwrite_first_member(wds_store, tmp_path, suffix: str, data: bytes, pad: bool = False):
    """A copy of the store whose first train shard has its first `suffix` member's bytes overwritten in
    place with `data` (padded with spaces to the member's size where `pad`): the tar stays well-formed."""
    import shutil
    import tarfile

    root = tmp_path / "store"
    shutil.copytree(wds_store.root, root)
    store = Store.open(root)
    shard = store.shard_paths("train")[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(suffix))
    assert len(data) <= member.size
    with open(shard, "r+b") as fh:
        fh.seek(member.offset_data)
        fh.write(data.ljust(member.size) if pad else data)
    return store, shard


def test_an_unreadable_webdataset_sample_is_logged_and_skipped_not_the_end_of_the_epoch(stores, tmp_path):
    """One sample's frames.npy header is overwritten in place (the tar stays well-formed): the epoch
    goes on with every other sample, a warning names the fix; with webdataset's reraise policy it stops."""
    import webdataset as wds

    store, _ = _overwrite_first_member(stores[0], tmp_path, ".frames.npy", b"not an npy header")
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=False, augment=AugmentConfig(size=32))
    with pytest.warns(UserWarning, match="skipped a sample that cannot be read.*vidpipe verify"):
        ids = [it["ids"] for it in WebDatasetClips(store, "train", cfg)]
    assert len(ids) == store.index["splits"]["train"]["count"] - 1 and len(set(ids)) == len(ids)
    with pytest.raises(ValueError):
        list(WebDatasetClips(store, "train", cfg, handler=wds.reraise_exception))


@pytest.mark.parametrize("json_member", [b"[1, 2]", b"{\"label\": 3}", b"not json at all"])
def test_a_sample_json_without_an_id_is_one_line_naming_the_shard(stores, tmp_path, json_member):
    """A json member rewritten in place (the tar stays well-formed): a list, an object without an id, not
    JSON. The loader reads it once, when it indexes the shard, and refuses the shard in one line."""
    from vidpipe.errors import VidpipeError

    store, shard = _overwrite_first_member(stores[0], tmp_path, ".json", json_member, pad=True)  # JSON allows trailing spaces
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=False, augment=AugmentConfig(size=32))
    with pytest.raises(VidpipeError, match=f"shard {shard} is damaged.*vidpipe verify"):
        list(WebDatasetClips(store, "train", cfg))


def test_batches_come_from_torchs_default_collate(stores):
    """No hand-written collate: a batch is exactly torch's default_collate of the items."""
    from torch.utils.data import default_collate

    _, zarr_store = stores
    cfg = ClipConfig(sampling=Sampling.tsn(4), train=True, augment=AugmentConfig(size=32), seed=1)
    loader = clip_loader(zarr_store, "train", cfg, batch_size=4, workers=0)
    loader.set_epoch(0)
    batch = next(iter(loader))
    ds = loader.dataset
    expected = default_collate([ds[i] for i in list(iter(loader.sampler))[:4]])
    assert batch.keys() == expected.keys() and batch["ids"] == expected["ids"]
    assert batch["clips"].dtype == torch.uint8 and batch["flips"].dtype == torch.bool and batch["labels"].dtype == torch.int64
    for key in ("clips", "labels", "boxes", "flips"):
        assert torch.equal(batch[key], expected[key])


def test_numpy_collate_is_default_collate(tmp_path):
    """The main-process collate gives default_collate's batch: the same keys, tensors, dtypes and lists."""
    from torch.utils.data import default_collate

    from vidpipe.data.loaders import numpy_collate

    rng = np.random.default_rng(0)
    items = [{"clips": rng.integers(0, 255, (2, 4, 8, 8, 3), dtype=np.uint8), "labels": i, "ids": f"v{i}",
              "boxes": rng.integers(0, 9, 4), "flips": bool(i % 2)} for i in range(3)]
    a, b = numpy_collate(items), default_collate(items)
    assert a.keys() == b.keys() and a["ids"] == b["ids"]
    for key in ("clips", "labels", "boxes", "flips"):
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


FORK_AFTER_DECODING = '''
import gc, sys
import av, numpy as np, torch
from torch.utils.data import Dataset
from vidpipe.data.loaders import EpochLoader
from vidpipe.io.ffmpeg import Geometry, encode_video
from vidpipe.io.pyav import filter_graph

class Collecting(Dataset):  # a worker whose garbage collector runs, as every worker's eventually does
    def __len__(self):
        return 4
    def __getitem__(self, i):
        gc.collect()
        return {"x": torch.zeros(2)}

gc.disable()  # no automatic collection frees the cycle below before the fork (one may, or may not, in real use)
video = sys.argv[1]
encode_video(np.random.default_rng(0).integers(0, 255, (8, 240, 320, 3), dtype=np.uint8), video, "h264", fps=25)
with av.open(video) as container:
    stream = container.streams.video[0]
    graph = filter_graph(stream, Geometry.cover((320, 240), 128, 170))
    graph.push(next(container.decode(stream)))
    graph.pull()
cycle = [graph, None]
cycle[1] = cycle  # the graph now waits for the garbage collector, as a failed decode's traceback leaves it
del graph, cycle
loader = EpochLoader(Collecting(), dict(batch_size=2, num_workers=2, pin_memory=False, drop_last=False))
print(sum(len(batch["x"]) for batch in loader), "items")
'''


def test_workers_forked_after_a_pyav_decode_do_not_hang(tmp_path):
    """A process that decoded with PyAV (a notebook that extracts, then trains) and forks DataLoader
    workers: a filter graph left in a reference cycle, freed by a worker's garbage collector, waited
    forever for libswscale's threads (which a fork does not copy). The loader frees it before forking."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "fork_after_decoding.py"
    script.write_text(FORK_AFTER_DECODING)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "v.mp4")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its hung workers
        proc.communicate()
        pytest.fail("the DataLoader hung: a forked worker freed a PyAV filter graph")
    assert proc.returncode == 0, err[-2000:]
    assert out.split() == ["4", "items"]
