"""Stores at a URL: s3://, gs://, az:// (any fsspec protocol whose package is installed; s3fs is the one
tested) and https:// (read-only).

A remote store holds the same objects, at the same relative paths and with the same bytes, as a local
one. This module is the only one that talks to the object store: `Remote` opens a URL through fsspec
(credentials and endpoints from the standard places: the environment, ~/.aws, `AWS_ENDPOINT_URL` for
an S3-compatible server), reads, lists, and uploads whole objects (one PUT, or a multipart upload that
becomes visible only when complete), retrying a network error a bounded number of times. Every failure
of the object store is one `VidpipeError` line naming the URL (without any user:password part) and
the fix; nothing printed ever holds a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path

from vidpipe.errors import VidpipeError
from vidpipe.files import relative_inside

TRIES = 3  # attempts at one object when the network fails (each also retried by botocore itself)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
READ_ONLY = ("http", "https")


def is_url(path) -> bool:
    """Whether a store path names a URL (s3://, gs://, https://, ...) rather than a local folder."""
    m = _URL.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def location(path: str | Path) -> str | Path:
    """A store path as vidpipe keeps it: a URL stays text (Path would fold its `//`), anything else is a Path."""
    return str(path).rstrip("/") if is_url(path) else Path(path)


def shown(url: str) -> str:
    """A URL as it may be printed: without a user:password part."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", str(url))


def _network_errors() -> tuple:
    errors = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import botocore.exceptions as be

        errors += [be.ConnectionError, be.ReadTimeoutError, be.ConnectTimeoutError]
    with contextlib.suppress(ImportError):
        import aiohttp

        errors += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    return tuple(errors)


def _no_credentials(e: BaseException) -> bool:
    return type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "ClientAuthenticationError")


class ObjectMissing(VidpipeError):
    """No object at a URL whose bucket exists: callers that expect this (a probe for a file) catch it."""


def explain(url: str, action: str, e: BaseException) -> VidpipeError:
    """The one line an object-store failure becomes: what failed, at which URL, and the fix."""
    where = shown(url)
    text = str(e).split("\n")[0][:160]
    if isinstance(e, VidpipeError):
        return e
    if _no_credentials(e):
        return VidpipeError(f"no credentials to {action} {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, "
                            "~/.aws/credentials), and AWS_ENDPOINT_URL for an S3-compatible server")
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return VidpipeError(f"access denied to {action} {where} ({text}); check the credentials' rights and the bucket's policy, "
                            "or choose another URL")
    if isinstance(e, FileNotFoundError) and "bucket" in text.lower():
        return VidpipeError(f"the bucket of {where} does not exist; create it first (`aws s3 mb`, or your provider's console) "
                            "or fix the URL")
    if isinstance(e, FileNotFoundError):
        return ObjectMissing(f"{where} not found ({action}); check the URL")
    if isinstance(e, _network_errors()):
        return VidpipeError(f"network error while trying to {action} {where} after {TRIES} tries ({text}); check the endpoint "
                            "(AWS_ENDPOINT_URL) and the network, then rerun: finished shards are kept")
    return VidpipeError(f"cannot {action} {where} ({type(e).__name__}: {text})")


class Remote:
    """A store's root at a URL, and the object operations vidpipe needs there."""

    def __init__(self, url: str, write: bool = False):
        import fsspec

        self.url = str(url).rstrip("/")
        scheme = _URL.match(self.url).group(1).lower()
        self.read_only = scheme in READ_ONLY
        if write and self.read_only:
            raise VidpipeError(f"{shown(self.url)} is read-only (HTTP serves stores, it does not take them); write to s3://, gs://, "
                               "az:// or a local folder")
        try:
            self._fs, self.root = fsspec.core.url_to_fs(self.url)
        except ImportError as e:
            package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(scheme, "its fsspec package")
            raise VidpipeError(f"{scheme}:// stores need {package}: pip install 'vidpipe[remote]' {package} ({e.__class__.__name__})") from None
        except ValueError as e:
            raise VidpipeError(f"{shown(self.url)} is not a URL vidpipe can open ({e}); use s3://, gs://, az:// or https://") from None
        self.root, self._pid = self.root.rstrip("/"), os.getpid()

    @property
    def fs(self):
        """The fsspec filesystem, made again in a forked process (a DataLoader worker): an async one's event
        loop does not survive fork."""
        if self._pid != os.getpid():
            import fsspec

            self._fs = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)[0]
            self._pid = os.getpid()
        return self._fs

    def __repr__(self) -> str:
        return f"Remote({shown(self.url)!r})"

    def key(self, rel: str) -> str:
        """The filesystem path of a relative path read from a store's own index (kept inside the root)."""
        relative_inside(rel, f"a path in {shown(self.url)}")
        return f"{self.root}/{rel}"

    def url_of(self, rel: str) -> str:
        relative_inside(rel, f"a path in {shown(self.url)}")
        return f"{self.url}/{rel}"

    @contextlib.contextmanager
    def errors(self, action: str, rel: str = ""):
        """Inside, any failure of the object store becomes its one line."""
        try:
            yield
        except VidpipeError:
            raise
        except Exception as e:  # botocore, aiohttp and fsspec raise their own types
            raise explain(f"{self.url}/{rel}" if rel else self.url, action, e) from None

    def _retried(self, action: str, rel: str, fn):
        """fn() retried on a network error, TRIES times in all (0.5 s, then 1 s between), then its one line."""
        network = _network_errors()
        with self.errors(action, rel):
            for attempt in range(TRIES - 1):
                try:
                    return fn()
                except network:
                    time.sleep(0.5 * 2 ** attempt)
            return fn()

    # ------------------------------------------------------------------ reading
    def sizes(self, rel: str = "") -> dict[str, int]:
        """Every object under the root (or under rel) and its size, from one listing; {} when there is none."""
        base = self.key(rel) if rel else self.root
        try:
            with self.errors("list", rel):
                found = self.fs.find(base, detail=True)
        except ObjectMissing:
            return {}
        return {name[len(self.root) + 1:]: info.get("size") for name, info in found.items() if info.get("type", "file") == "file"}

    def sizes_of(self, rels: list[str]) -> dict[str, int | None]:
        """The sizes of these objects (None: missing): one listing from an object store, a HEAD request per
        file from an HTTP server (which lists nothing)."""
        if self.read_only:
            return {rel: self.size(rel) for rel in rels}
        listed = self.sizes()
        return {rel: listed.get(rel) for rel in rels}

    def size(self, rel: str) -> int | None:
        try:
            with self.errors("read", rel):
                return self.fs.size(self.key(rel))
        except ObjectMissing:
            return None

    def read_bytes(self, rel: str) -> bytes:
        return self._retried("read", rel, lambda: self.fs.cat_file(self.key(rel)))

    def read_json(self, rel: str, fix: str):
        """A JSON object of the store (store.json, a plan, a part record): missing or damaged is one line with `fix`."""
        try:
            data = self.read_bytes(rel)
        except ObjectMissing:
            raise ObjectMissing(f"{shown(self.url)}/{rel} not found; {fix}") from None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VidpipeError(f"{shown(self.url)}/{rel} is damaged (not JSON: {e.__class__.__name__}); {fix}") from None

    def open(self, rel: str, block_size: int = 8 << 20):
        """A readable file object of one object, read ahead in `block_size` blocks."""
        with self.errors("read", rel):
            if self.read_only:  # streamed: a plain HTTP server (python -m http.server) answers no range requests
                return self.fs.open(self.key(rel), "rb", block_size=0)
            return self.fs.open(self.key(rel), "rb", block_size=block_size, cache_type="readahead")

    def sha256(self, rel: str, chunk: int = 8 << 20) -> str:
        def digest():
            h = hashlib.sha256()
            with self.open(rel, chunk) as fh:
                while block := fh.read(chunk):
                    h.update(block)
            return h.hexdigest()
        return self._retried("read", rel, digest)

    def download(self, rel: str, local: Path) -> None:
        """One object to a local file, published by rename (a kill leaves no half file under its name)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f"{local.name}.{os.getpid()}.download")
        try:
            self._retried("read", rel, lambda: self.fs.get_file(self.key(rel), str(tmp)))
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def upload(self, local: Path, rel: str) -> None:
        """A local file to one object: a single PUT (multipart for large files, visible only once complete)."""
        self._retried("write", rel, lambda: self.fs.put_file(str(local), self.key(rel)))

    def write_bytes(self, rel: str, data: bytes, create: bool = False) -> bool:
        """One small object. create=True: only if no object has that name (a conditional PUT, If-None-Match,
        where the store supports it; else look, then write); returns False when one had it already."""
        def put():
            if not create:
                self.fs.pipe_file(self.key(rel), data)
                return True
            try:
                self.fs.pipe_file(self.key(rel), data, mode="create")
            except FileExistsError:
                return False
            except (TypeError, NotImplementedError):  # no conditional writes here
                if self.fs.exists(self.key(rel)):
                    return False
                self.fs.pipe_file(self.key(rel), data)
            return True
        return self._retried("write", rel, put)

    def remove(self, rels: list[str]) -> None:
        if rels:
            with self.errors("delete", rels[0]):
                self.fs.rm([self.key(r) for r in rels])
