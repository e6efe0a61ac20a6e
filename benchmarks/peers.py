"""vidpipe's loaders against what a user would pick instead, on the same clips: litdata and
mosaicml-streaming (raw frames and JPEG frames), an mmaction2-style rawframes folder decoded with simplejpeg,
and decoding every epoch with PyAV, decord or torchcodec.

Every contender serves the train split of the hmdb51-like set with the same clip spec: TSN 8 frames per
clip, chosen by vidpipe's seeded plan for (seed, epoch, video id), of the 32 stored 128 x 170 frames
(the decode rows decode the same 8 source frames of the same 32-frame grid at that size), batch 8,
2 DataLoader workers. The formats are written from the same vidpipe stores, so every contender holds the
same frames (JPEG rows the same JPEG bytes). Contenders are started first, then timed in interleaved
rounds; the figure is the median. A contender whose package is missing is skipped, with the reason.

Usage (after benchmarks/loader.sh WORK, which leaves WORK/loader-*):
    .venv/bin/pip install -e '.[peers]'
    .venv/bin/python benchmarks/peers.py WORK
Writes benchmarks/results/peers.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidpipe.bench.extract import write_json
from vidpipe.data.augment import AugmentConfig
from vidpipe.data.loaders import ClipConfig, clip_loader
from vidpipe.data.sampling import Sampling
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io import jpeg
from vidpipe.io.decode import ClipSpec, uniform_indices
from vidpipe.io.ffmpeg import Geometry
from vidpipe.stores.clips import Store
from vidpipe.stores.shards import read_samples

CFG = ClipConfig(sampling=Sampling.parse("1x1x8"), train=True, augment=AugmentConfig(size=112), seed=0)
FRAMES, HEIGHT, WIDTH = 32, 128, 170


def item(frames_at, n_frames: int, label: int, vid: str) -> dict:
    """One clip, as vidpipe's loaders cut it: `frames_at(sorted unique indices)` returns those frames."""
    return CFG.read_item((n_frames, HEIGHT, WIDTH, 3), frames_at, label, vid, epoch=0)


def loader(dataset, **kw) -> DataLoader:
    return DataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True, shuffle=True, **kw)


# ------------------------------------------------------------------ formats written from the stores
def raw_samples(store: Store):
    for vid, frames, label, _ in store.samples("train"):
        yield vid, frames, label


def jpeg_samples(store: Store):
    for shard in store.shard_paths("train"):
        for s in read_samples(shard):
            yield s["json"]["id"], s["frames"], s["cls"]


def write_litdata(out: Path, samples: list) -> None:
    import litdata

    litdata.optimize(fn=_litdata_item, inputs=samples, output_dir=str(out), chunk_bytes="64MB", num_workers=1)


def _litdata_item(sample):
    vid, frames, label = sample
    return {"id": vid, "label": label, "frames": frames} if isinstance(frames, np.ndarray) else {"id": vid, "label": label, **packed(frames)}


def packed(jpegs: list[bytes]) -> dict:
    """A list of JPEGs as the fields both streaming formats store natively: one bytes blob and the sizes."""
    return {"jpeg_blob": b"".join(jpegs), "jpeg_sizes": np.array([len(b) for b in jpegs], np.int32)}


def unpacked(sample: dict) -> dict:
    if "jpeg_blob" in sample:
        ends = np.cumsum(sample.pop("jpeg_sizes"))
        blob = sample.pop("jpeg_blob")
        sample["jpegs"] = [blob[e - n : e] for e, n in zip(ends.tolist(), np.diff(ends, prepend=0).tolist())]
    return sample


def write_mds(out: Path, samples: list, codec: str) -> None:
    from streaming import MDSWriter

    columns = {"id": "str", "label": "int", **({"frames": "ndarray:uint8"} if codec == "raw" else {"jpeg_blob": "bytes", "jpeg_sizes": "ndarray:int32"})}
    with MDSWriter(out=str(out), columns=columns, size_limit="64mb") as writer:
        for vid, frames, label in samples:
            writer.write({"id": vid, "label": label, **({"frames": frames} if codec == "raw" else packed(frames))})


def write_rawframes(out: Path, samples: list) -> None:
    """mmaction2's rawframes layout: <out>/<video>/img_00001.jpg ..., a list file of `<video> <n> <label>`."""
    lines = []
    for k, (vid, jpegs, label) in enumerate(samples):
        folder = out / f"v{k:05d}"
        folder.mkdir(parents=True)
        for t, blob in enumerate(jpegs):
            (folder / f"img_{t + 1:05d}.jpg").write_bytes(blob)
        lines.append(f"{folder.name} {len(jpegs)} {label} {vid}")
    (out / "list.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ contenders' datasets
def _cut(sample: dict) -> dict:
    if "frames" in sample:
        frames = np.asarray(sample["frames"])
        return item(lambda wanted: frames[wanted], len(frames), int(sample["label"]), sample["id"])
    jpegs = sample["jpegs"]
    return item(lambda wanted: jpeg.decode([jpegs[t] for t in wanted]), len(jpegs), int(sample["label"]), sample["id"])


# module-level classes: litdata switches multiprocessing to spawn, whose workers unpickle them by name
try:
    import litdata

    class LitdataClips(litdata.StreamingDataset):
        def __getitem__(self, index):
            return _cut(unpacked(super().__getitem__(index)))
except ImportError:
    litdata = None

try:
    import streaming

    class MDSClips(streaming.StreamingDataset):
        def __getitem__(self, index):
            return _cut(unpacked(dict(super().__getitem__(index))))
except ImportError:
    streaming = None


class RawFrames(Dataset):
    def __init__(self, root: Path):
        self.root = root
        self.videos = [line.split() for line in (root / "list.txt").read_text().splitlines()]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        folder, n, label, vid = self.videos[i]

        def frames_at(wanted):
            return jpeg.decode([(self.root / folder / f"img_{t + 1:05d}.jpg").read_bytes() for t in wanted])

        return item(frames_at, int(n), int(label), vid)


class DecodeEveryEpoch(Dataset):
    """The 8 sampled frames of the 32-frame uniform grid, decoded from the source video each time."""

    def __init__(self, manifest, decoder: str):
        self.manifest, self.records, self.decoder = manifest, manifest.split_records("train"), decoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        path = str(self.manifest.abspath(r))
        return item(lambda wanted: self.decode(path, wanted), FRAMES, r.label, r.id)

    def decode(self, path: str, wanted) -> np.ndarray:
        if self.decoder == "pyav":
            from vidpipe.io.decode import decode_clip

            return decode_clip(path, ClipSpec(FRAMES, HEIGHT, WIDTH), decoder="pyav")[0][wanted]
        if self.decoder == "decord":
            import decord

            reader = decord.VideoReader(path, width=WIDTH, height=HEIGHT, num_threads=1)
            grid, _ = uniform_indices(len(reader), FRAMES)
            return reader.get_batch([grid[t] for t in wanted]).asnumpy()
        from torchcodec.decoders import VideoDecoder

        torch.set_num_threads(1)
        decoder = VideoDecoder(path, num_ffmpeg_threads=1)
        grid, _ = uniform_indices(decoder.metadata.num_frames, FRAMES)
        frames = decoder.get_frames_at([grid[t] for t in wanted]).data  # (n, 3, h, w) uint8
        g = Geometry.cover((frames.shape[3], frames.shape[2]), HEIGHT, WIDTH)
        x = torch.nn.functional.interpolate(frames.float(), size=(g.scaled_h, g.scaled_w), mode="bilinear", antialias=True)
        x = x[:, :, g.crop_y : g.crop_y + HEIGHT, g.crop_x : g.crop_x + WIDTH]
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------ the run
def endless(batches):
    """Batches forever: epoch after epoch of a loader (a vidpipe loader is told each epoch's number)."""
    for epoch in itertools.count():
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        yield from batches


def contenders(work: Path, scratch: Path) -> tuple[dict, dict]:
    """{name: endless batches}, {name: why it was skipped}."""
    stores = {f"{fmt} {codec}": Store.open(work / f"loader-{fmt}-{codec}") for fmt in ("webdataset", "zarr") for codec in ("raw", "jpeg")}
    runs, skipped = {}, {}
    for name, store in stores.items():
        runs[f"vidpipe {name}"] = endless(clip_loader(store, "train", CFG, batch_size=8, workers=2))
    raw = list(raw_samples(stores["webdataset raw"]))
    jpegs = list(jpeg_samples(stores["webdataset jpeg"]))
    have = {name: importlib.util.find_spec(name) is not None for name in ("decord", "torchcodec")}
    if have["torchcodec"]:
        try:  # torchcodec loads the system's FFmpeg 4-7 shared libraries (Debian: libavcodec59 and its kin)
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        except (OSError, RuntimeError, ImportError):
            have["torchcodec"] = False
            skipped["decode every epoch (torchcodec)"] = "torchcodec finds no FFmpeg 4-7 shared libraries (install FFmpeg's libraries)"
    for codec, samples in (("raw", raw), ("jpeg", jpegs)):
        if litdata is not None:
            write_litdata(scratch / f"litdata-{codec}", samples)
            dataset = LitdataClips(str(scratch / f"litdata-{codec}"), shuffle=True)
            runs[f"litdata {codec}"] = endless(litdata.StreamingDataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True))
        else:
            skipped[f"litdata {codec}"] = "litdata is not installed (pip install -e '.[peers]')"
        if streaming is not None:
            write_mds(scratch / f"mds-{codec}", samples, codec)
            ds = MDSClips(local=str(scratch / f"mds-{codec}"), shuffle=True, batch_size=8)  # the dataset shuffles, as streaming requires
            runs[f"mosaicml-streaming {codec}"] = endless(DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True))
        else:
            skipped[f"mosaicml-streaming {codec}"] = "mosaicml-streaming is not installed (pip install -e '.[peers]')"
    write_rawframes(scratch / "rawframes", jpegs)
    runs["rawframes folder (mmaction2 layout), simplejpeg"] = endless(loader(RawFrames(scratch / "rawframes")))
    manifest = build_manifest("synthetic", work / "hmdb51-like")
    for decoder, package in (("pyav", None), ("decord", "decord"), ("torchcodec", "torchcodec")):
        if package and not have[package]:
            skipped.setdefault(f"decode every epoch ({decoder})", f"{package} is not installed (pip install -e '.[peers]')")
            continue
        runs[f"decode every epoch ({decoder})"] = endless(loader(DecodeEveryEpoch(manifest, decoder)))
    return runs, skipped


PREFETCHED = 4  # batches a contender's workers made while the others were timed (2 workers x prefetch 2): not timed


def timed(batches, clips: int) -> float:
    for _ in range(PREFETCHED):
        next(batches)
    n, t0 = 0, time.perf_counter()
    for batch in batches:
        n += len(batch["labels"])
        if n >= clips:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the WORK of benchmarks/loader.sh")
    parser.add_argument("--clips", type=int, default=400, help="clips per contender per round")
    parser.add_argument("--decode-clips", type=int, default=48, help="clips per decode-every-epoch contender per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = args.work / "peers"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    runs, skipped = contenders(args.work, scratch)
    for name, batches in runs.items():  # workers started, files opened, outside the clock
        next(batches)
        print(f"started {name}", file=sys.stderr)
    rates = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, batches in runs.items():
            rates[name].append(timed(batches, args.decode_clips if name.startswith("decode") else args.clips))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    base = statistics.median(rates["vidpipe webdataset raw"])
    rows = [{"contender": name, "clips_per_s": statistics.median(v), "rounds": v, "x_vidpipe_webdataset_raw": statistics.median(v) / base}
            for name, v in rates.items()]
    result = {"machine": platform.platform(), "cpus": os.cpu_count(),
              "clips": "TSN 8 of 32 stored frames, 128 x 170, batch 8, 2 workers, train split of the hmdb51-like set",
              "rounds": args.rounds, "rows": rows, "skipped": skipped}
    out = Path(__file__).parent / "results" / "peers.json"
    write_json(result, out)
    lines = [f"{'contender':52} {'clips/s':>9} {'x vidpipe wds raw':>18}"]
    lines += [f"{r['contender']:52} {r['clips_per_s']:9.1f} {r['x_vidpipe_webdataset_raw']:18.2f}" for r in rows]
    lines += [f"{name:52} skipped: {why}" for name, why in skipped.items()]
    print("\n".join(lines) + f"\nwrote {out}")


if __name__ == "__main__":
    main()
