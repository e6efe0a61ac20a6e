"""stores.remote: which paths are URLs, what is printed of them, the one line each object-store failure
becomes, bounded retries, and the conditional create the parts of an extraction rely on (against moto's
S3 server on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe.errors import VidpipeError
from vidpipe.stores import remote
from vidpipe.stores.remote import Remote, explain, is_url, location, shown


def test_urls_and_folders():
    assert is_url("s3://b/p") and is_url("https://h/x") and is_url("gs://b") and is_url("az://c/p")
    assert not is_url("stores/k400") and not is_url("/abs/path") and not is_url("file:///tmp/x") and not is_url("C:/x")
    assert location("s3://b/p/") == "s3://b/p" and location("stores/x") == Path("stores/x")
    assert shown("https://user:pa55@host/store") == "https://host/store" and shown("s3://b/p") == "s3://b/p"


def test_each_failure_is_one_line_naming_the_url_and_the_fix():
    import botocore.exceptions as be

    url = "s3://bkt/store"
    cases = [(be.NoCredentialsError(), "no credentials to read s3://bkt/store: set AWS_ACCESS_KEY_ID"),
             (PermissionError("Forbidden"), "access denied to read s3://bkt/store"),
             (FileNotFoundError("The specified bucket does not exist"), "the bucket of s3://bkt/store does not exist"),
             (FileNotFoundError("no such key"), "s3://bkt/store not found"),
             (be.EndpointConnectionError(endpoint_url="http://x"), "network error while trying to read s3://bkt/store"),
             (RuntimeError("odd"), "cannot read s3://bkt/store (RuntimeError: odd)")]
    for error, words in cases:
        line = str(explain(url, "read", error))
        assert words in line and "\n" not in line, (error, line)
    assert "pa55" not in str(explain("https://u:pa55@h/s", "read", PermissionError("x")))


def test_network_errors_are_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    r = Remote("https://example.invalid/store")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < remote.TRIES:
            raise ConnectionError("reset")
        return "ok"

    assert r._retried("read", "x", flaky) == "ok" and len(calls) == remote.TRIES
    calls.clear()

    def down():
        calls.append(1)
        raise ConnectionError("reset")

    with pytest.raises(VidpipeError, match=f"network error while trying to read https://example.invalid/store/x after {remote.TRIES} tries"):
        r._retried("read", "x", down)
    assert len(calls) == remote.TRIES


def test_http_is_read_only_and_an_unknown_protocol_says_so():
    with pytest.raises(VidpipeError, match="read-only"):
        Remote("https://example.invalid/store", write=True)
    with pytest.raises(VidpipeError, match="not a URL vidpipe can open|needs"):
        Remote("nosuchproto://x/y")


def test_paths_from_an_index_stay_inside_the_root():
    r = Remote("https://example.invalid/store")
    assert r.key("train/a.tar").endswith("/store/train/a.tar")
    for bad in ("../other/store.json", "/etc/passwd", "s3://elsewhere/x"):
        with pytest.raises(VidpipeError, match="outside its folder|not a relative path"):
            r.key(bad)


def test_conditional_create_keeps_the_first_writer(s3_bucket):
    r = Remote(f"s3://{s3_bucket}/store", write=True)
    assert r.write_bytes("_extract/plan.json", b"first", create=True)
    assert not r.write_bytes("_extract/plan.json", b"second", create=True)
    assert r.read_bytes("_extract/plan.json") == b"first"
    assert r.sizes() == {"_extract/plan.json": 5} and r.sizes_of(["_extract/plan.json", "nope"]) == {"_extract/plan.json": 5, "nope": None}
