"""Extraction into a bucket (s3://, gs://, az://): the store's objects are those of a local extraction.

A part works in a local *staging* folder that holds the store's small files (plan, manifest, zarr
metadata) and the units in flight, never the whole store. Each unit's shard is written there as on
local disk, then uploaded in one PUT (multipart for a large one, visible only once complete), deleted
locally, and marked done by uploading its part record (STORE/_extract/parts/<unit>.json) last: a reader
never sees half a shard, and a killed part redoes only the units without a record, to the same bytes.

Parts on different machines share nothing but the bucket, and take no lock: each writes only its own
units' objects and records; the preparation (manifest, zarr metadata, then plan.json) has the same bytes
from every part, the plan created by a conditional PUT and compared by whoever finds it there; and
finalizing (store.json last) writes the same bytes however often, by whichever part, it runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from vidpipe.errors import VidpipeError
from vidpipe.files import read_json
from vidpipe.stores.finalize import merge_parts
from vidpipe.stores.plan import control, part_file, plan_file, read_plan, write_part
from vidpipe.stores.remote import Remote, shown
from vidpipe.stores.writers import Unit

PLAN = "_extract/plan.json"
_REDO_PART = "delete it and rerun `vidpipe extract` to redo that shard"


@contextlib.contextmanager
def staging(cache_dir: str | Path | None):
    """The local folder a part stages a bucket's store in, new for each run (everything it needs comes from
    the bucket) and removed at the end: inside --cache-dir where given, else in the temporary folder."""
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidpipe-staging-", dir=cache_dir) as tmp:
        yield Path(tmp)


def mirror_control(remote: Remote, sizes: dict, stage: Path) -> None:
    """The bucket's plan, manifest and zarr metadata into the staging folder (plan.json last)."""
    wanted = [rel for rel in sizes if rel == "manifest.jsonl" or (rel.split("/")[0].endswith(".zarr") and rel.endswith("zarr.json"))]
    for rel in [*sorted(wanted), PLAN]:
        remote.download(rel, stage / rel)


def publish_preparation(remote: Remote, stage: Path) -> None:
    """A freshly prepared store's files from the staging folder to the bucket, the plan last and only if no
    part created it first; a plan another part created must be this one, byte for byte."""
    for path in sorted(p for p in stage.rglob("*") if p.is_file() and control(stage) not in p.parents):
        remote.upload(path, str(path.relative_to(stage)))
    ours = plan_file(stage).read_bytes()
    if not remote.write_bytes(PLAN, ours, create=True):
        theirs = remote.read_bytes(PLAN)
        if theirs != ours:
            raise VidpipeError(f"another part prepared {shown(remote.url)} with other settings or another vidpipe at the same moment; "
                               "give every part the same manifest and settings, then rerun")


class RemoteTarget:
    """Where `extract` publishes units of a store in a bucket: `done`, `publish`, `finalize`, as
    `stores.extract.LocalTarget` does for a folder."""

    def __init__(self, remote: Remote, stage: Path):
        self.remote, self.stage, self.name = remote, stage, shown(remote.url)
        self.refresh()

    def refresh(self) -> None:
        self.sizes = self.remote.sizes()  # one listing: every object and its size

    def has(self, rel: str) -> bool:
        return rel in self.sizes

    def done(self, unit: Unit) -> bool:
        """A unit is done when its record is in the bucket and every object it names is there at its size;
        the record is kept in the staging folder for finalizing."""
        rel = f"_extract/parts/{unit.name}.json"
        if rel not in self.sizes:
            return False
        local = part_file(self.stage, unit)
        if not local.is_file():
            self.remote.download(rel, local)
        record = read_json(local, _REDO_PART)
        return all(self.sizes.get(f["path"]) == f["bytes"] for f in record["files"])

    def publish(self, unit: Unit, files: list[dict], metas: list[dict], failures: list[dict]) -> None:
        """Upload a committed unit's files, drop them locally, then upload its record (the done-marker)."""
        for f in files:
            local = self.stage / f["path"]
            self.remote.upload(local, f["path"])
            local.unlink()
            self.sizes[f["path"]] = f["bytes"]
        write_part(self.stage, unit, files, metas, failures)
        rel = str(part_file(self.stage, unit).relative_to(self.stage))
        self.remote.upload(part_file(self.stage, unit), rel)
        self.sizes[rel] = part_file(self.stage, unit).stat().st_size

    def finalize(self) -> dict:
        """store.json (and failures.jsonl, the zarr arrays beside frames) made from the records in the
        staging folder, then uploaded, store.json last."""
        summary = merge_parts(self.stage, done=self.done)
        shards = {f["path"] for p in (control(self.stage) / "parts").glob("*.json") for f in read_json(p, _REDO_PART)["files"]}
        written = [p for p in self.stage.rglob("*") if p.is_file() and control(self.stage) not in p.parents
                   and p.name != "store.json" and str(p.relative_to(self.stage)) not in shards]
        for path in sorted(written):
            self.remote.upload(path, str(path.relative_to(self.stage)))
        self.remote.upload(self.stage / "store.json", "store.json")
        return summary

    def summary(self) -> dict:
        return self.remote.read_json("store.json", f"rerun with `vidpipe extract --finalize {shown(self.remote.url)}`")


def finalize_url(url: str, cache_dir: str | Path | None = None) -> dict:
    """`vidpipe extract --finalize s3://...`: merge the parts' records in the bucket into store.json."""
    remote = Remote(url, write=True)
    with staging(cache_dir) as stage:
        target = RemoteTarget(remote, stage)
        if PLAN not in target.sizes:
            raise VidpipeError(f"{shown(url)} has no _extract/plan.json: it is not an extraction in progress; run `vidpipe extract` first")
        mirror_control(remote, target.sizes, stage)
        read_plan(stage)  # checked before anything is merged
        return target.finalize()
