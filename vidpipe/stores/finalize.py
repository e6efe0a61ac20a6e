"""The last step of an extraction: merge the per-unit records into STORE/store.json (and failures.jsonl).

Everything it needs comes from the store itself: the plan (STORE/_extract/plan.json) gives the units and
settings, manifest.jsonl the records, the part records what each unit holds. Idempotent and serialised
by the store lock, so parts finishing together each finalize in turn, to the same bytes.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from vidpipe import __version__
from vidpipe.datasets.manifest import Manifest
from vidpipe.errors import VidpipeError
from vidpipe.files import read_json, sha256_file, write_text_atomic
from vidpipe.io import pyav
from vidpipe.io.decode import ClipSpec
from vidpipe.io.ffmpeg import ffmpeg_version
from vidpipe.stores.plan import part_file, plan_file, read_plan, store_lock, unit_done
from vidpipe.stores.writers import file_entry


def finalize(store: str | Path) -> dict:
    """Merge the part records into STORE/store.json (and STORE/failures.jsonl); returns store.json."""
    store = Path(store)
    if not plan_file(store).is_file():
        raise VidpipeError(f"{store} has no _extract/plan.json: it is not an extraction in progress; run `vidpipe extract` first")
    with store_lock(store):
        return merge_parts(store)


def merge_parts(store: Path, done=None) -> dict:
    """`done(unit)`: whether a unit is published (default: its files are in `store`); a store in a bucket is
    finalized in a local staging folder holding its records, its shards staying in the bucket."""
    done = done or (lambda unit: unit_done(store, unit))
    if not plan_file(store).is_file():
        raise VidpipeError(f"{store} has no _extract/plan.json: it is not an extraction in progress; run `vidpipe extract` first")
    manifest = Manifest.read(store / "manifest.jsonl", allow_outside_root=True)  # checked when extraction began
    plan = read_plan(store, manifest)
    cfg, spec = plan.config, plan.config.spec
    units = plan.units(manifest)
    missing = [u.name for u in units if not done(u)]
    if missing:
        raise VidpipeError(f"{len(missing)} shards are not extracted yet (e.g. {missing[0]}); run the remaining --shard-id parts, then --finalize")
    parts = {u.name: read_json(part_file(store, u), "delete it and rerun `vidpipe extract` to redo that shard") for u in units}
    splits, failures = {}, []
    for split in manifest.splits:
        split_parts = [parts[u.name] for u in units if u.split == split]
        videos = [v for p in split_parts for v in p["videos"]]
        failures += [f for p in split_parts for f in p["failures"]]
        entry = {"count": len(videos), "listed": plan.splits[split],
                 "failed": sum(len(p["failures"]) for p in split_parts), "shards": len(split_parts),
                 # what the stored videos were: seconds of video (frames / fps) and bytes of source files
                 "source_seconds": round(sum(v["num_frames"] / v["fps"] for v in videos if v.get("fps")), 3),
                 "source_frames": sum(v["num_frames"] for v in videos if v.get("fps")),
                 "source_bytes": sum(v.get("source_bytes", 0) for v in videos)}
        if cfg.format == "webdataset":
            entry["files"] = [f for p in split_parts for f in p["files"]]
        else:
            entry["array"] = f"{split}.zarr"
            entry["files"] = _finalize_zarr(store, split, [r for u in units if u.split == split for r in u.records], manifest.classes,
                                            videos, spec, [f for p in split_parts for f in p["files"]])
        splits[split] = entry
    write_text_atomic(store / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures))
    summary = {
        "format": cfg.format,
        "vidpipe_store": plan.store_format,
        "vidpipe_version": __version__,
        "dataset": manifest.dataset,
        "classes": manifest.classes,
        "num_classes": len(manifest.classes),
        "clip": {"frames": spec.frames, "height": spec.height, "width": spec.width, "channels": 3,
                 "layout": "THWC", "dtype": "uint8", "normalized": False, "codec": cfg.frame_codec,
                 **({"jpeg_quality": cfg.jpeg_quality} if cfg.frame_codec == "jpeg" else {}),
                 **({"jpeg_subsampling": cfg.jpeg_subsampling} if cfg.frame_codec == "jpeg" and cfg.jpeg_subsampling != "444" else {}),
                 "mode": "fps" if cfg.fps else "uniform",
                 **({"fps": cfg.fps, "max_seconds": cfg.max_seconds} if cfg.fps else {})},
        "sampling": (f"every video resampled to {cfg.fps} fps (stored frame k: the source frame on screen at window start + k / fps), "
                     f"at most a centred window of {cfg.max_seconds} s; T varies per video (at most clip.frames)") if cfg.fps else
                    "T indices at the centres of T equal segments of the whole video; index mod n when n < T",
        "resize": "resize to cover height x width keeping display aspect (SAR, rotation), then centre-crop",
        "settings": plan.settings,
        "ffmpeg": ffmpeg_version(),
        **({"pyav": pyav.pyav_version()} if plan.settings["backend"] == "pyav" else {}),
        "manifest": {"file": "manifest.jsonl", "sha256": sha256_file(store / "manifest.jsonl"), "root": manifest.root,
                     "split_id": manifest.split_id, "missing": len(manifest.missing)},
        "splits": splits,
        "backends": _count_backends(parts),
        "rerouted": [{"id": v["id"], "codec": v["codec"], "reason": v["rerouted"]}
                     for p in parts.values() for v in p["videos"] if "rerouted" in v],
        "failures": failures,
    }
    write_text_atomic(store / "store.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _count_backends(parts: dict) -> dict:
    counts = collections.Counter(v["backend"] for p in parts.values() for v in p["videos"])
    return dict(sorted(counts.items()))


def _finalize_zarr(store: Path, split: str, records: list, classes: list[str], videos: list[dict], spec: ClipSpec,
                   shards: list[dict]) -> list[dict]:
    """Write the per-video arrays next to frames and return every file of <split>.zarr with checksums: the
    frame shards as their part records give them (hashed as they were written), the rest hashed here."""
    import numpy as np
    import zarr

    by_id = {v["id"]: v for v in videos}
    n = len(records)
    group = zarr.open_group(store / f"{split}.zarr", mode="a")
    valid = np.array([r.id in by_id for r in records], bool)
    indices = np.full((n, spec.frames), -1, np.int32)
    metas = []
    for i, r in enumerate(records):
        v = by_id.get(r.id)
        if v is not None:
            indices[i, : len(v["indices"])] = v["indices"]  # fps stores: -1 after a video's own T
        metas.append(json.dumps(v, sort_keys=True) if v else "")

    def put(name, data, dtype=None):
        arr = group.create_array(name, shape=data.shape, dtype=dtype or data.dtype, chunks=data.shape, overwrite=True)
        arr[...] = data

    put("labels", np.array([r.label for r in records], np.int64))
    put("valid", valid)
    put("sample_indices", indices)
    put("lengths", np.array([len(by_id[r.id]["indices"]) if r.id in by_id else 0 for r in records], np.int32))  # T per video
    put("ids", np.array([r.id for r in records], dtype=object), dtype=str)
    put("meta", np.array(metas, dtype=object), dtype=str)
    group.attrs.update({"classes": classes, "split": split, "count": int(valid.sum())})
    recorded = {f["path"] for f in shards}
    others = [file_entry(store, p) for p in (store / f"{split}.zarr").rglob("*") if p.is_file() and str(p.relative_to(store)) not in recorded]
    return sorted([*shards, *others], key=lambda f: Path(f["path"]))
