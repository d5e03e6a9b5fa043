"""signaling.tus: tus 1.0.0 headers and upload state, table-driven."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signaling.tus import (
    UPLOAD_TTL_MS,
    TusError,
    UploadRequest,
    advance,
    check_patch,
    check_resumable,
    clean_filename,
    clean_type,
    encode_metadata,
    new_upload,
    parse_creation,
    parse_length,
    parse_metadata,
    parse_offset,
)

V = {"Tus-Resumable": "1.0.0"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def status_of(fn: object, *args: object) -> int:
    with pytest.raises(TusError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


@pytest.mark.parametrize(
    ("value", "status"), [(None, 412), ("0.2.2", 412), ("1.0.0 ", None), ("1.0.0", None)]
)
def test_tus_resumable(value: str | None, status: int | None) -> None:
    if status is None:
        check_resumable(value)
    else:
        assert status_of(check_resumable, value) == status


@pytest.mark.parametrize(
    ("value", "result"),
    [("0", 0), ("99", 99), (" 7 ", 7), ("100", 100), ("101", 413), ("-1", 400),
     ("1e3", 400), ("", 400), (None, 400), ("0x10", 400), ("9" * 25, 400)],
)  # fmt: skip
def test_upload_length(value: str | None, result: int) -> None:
    if result in (400, 413):
        assert status_of(parse_length, value, 100) == result
    else:
        assert parse_length(value, 100) == result


def test_upload_offset() -> None:
    assert parse_offset("42") == 42
    assert status_of(parse_offset, "-3") == 400
    assert status_of(parse_offset, None) == 400


def test_metadata_pairs() -> None:
    header = f"filename {b64('Befund Müller.zip')},filetype {b64('application/zip')},empty"
    assert parse_metadata(header) == {
        "filename": "Befund Müller.zip",
        "filetype": "application/zip",
        "empty": "",
    }
    assert parse_metadata(None) == {} and parse_metadata("  ") == {}


@pytest.mark.parametrize(
    "header",
    [
        "filename not*base64",
        f"a {b64('x')},a {b64('y')}",  # repeated key
        f"a {b64('x')} extra",
        "filename " + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
        ",",
        "x " + "A" * 5000,
    ],
)
def test_bad_metadata(header: str) -> None:
    assert status_of(parse_metadata, header) == 400


@given(st.dictionaries(st.from_regex(r"[a-z]{1,10}", fullmatch=True), st.text(max_size=40)))
def test_metadata_round_trip(pairs: dict[str, str]) -> None:
    assert parse_metadata(encode_metadata(pairs)) == pairs


def test_creation_request() -> None:
    sha = "AB" * 32
    sneaky = "../../etc/CT\u202e.zip"  # path and a right-to-left override
    headers = {
        **V,
        "Upload-Length": "10",
        "Upload-Metadata": f"filename {b64(sneaky)},sha256 {b64(sha)}",
    }
    req = parse_creation(headers, 100)
    assert req == UploadRequest(10, "CT.zip", "application/octet-stream", sha.lower())
    bad_sha = {**headers, "Upload-Metadata": f"sha256 {b64('abc')}"}
    assert status_of(parse_creation, bad_sha, 100) == 400
    assert status_of(parse_creation, {**headers, "Upload-Defer-Length": "1"}, 100) == 400
    assert status_of(parse_creation, {"Upload-Length": "10"}, 100) == 412
    assert status_of(parse_creation, {**headers, "Upload-Length": "101"}, 100) == 413


@pytest.mark.parametrize(
    ("name", "clean"),
    [("a/b/c.dcm", "c.dcm"), ("C:\\x\\y.zip", "y.zip"), ("\x00\x1b.", "file"),
     ("..", "file"), ("x" * 300, "x" * 255), ("Röntgen 1.png", "Röntgen 1.png")],
)  # fmt: skip
def test_clean_filename(name: str, clean: str) -> None:
    assert clean_filename(name) == clean


def test_clean_type() -> None:
    assert clean_type("Application/ZIP; charset=x") == "application/zip"
    assert clean_type("text/html<script>") == "application/octet-stream"
    assert clean_type(None) == "application/octet-stream"


def _state(length: int = 100, offset: int = 0) -> object:
    req = UploadRequest(length, "f", "application/octet-stream", None)
    return replace(new_upload("u1", "ward", "alice", "Alice", req, now_ms=1_000), offset=offset)


PATCH = {**V, "Content-Type": "application/offset+octet-stream"}


def test_patch_checks() -> None:
    state = _state(100, 40)
    assert check_patch(state, {**PATCH, "Upload-Offset": "40"}, 60, 2_000) == 60  # type: ignore[arg-type]
    assert check_patch(state, {**PATCH, "Upload-Offset": "40"}, None, 2_000) == 60  # type: ignore[arg-type]
    cases = [
        ({**PATCH, "Upload-Offset": "39"}, 10, 409),
        ({**PATCH, "Upload-Offset": "0"}, 10, 409),
        ({**PATCH, "Upload-Offset": "40"}, 61, 413),
        ({**PATCH, "Content-Type": "application/octet-stream", "Upload-Offset": "40"}, 1, 415),
        ({"Content-Type": PATCH["Content-Type"], "Upload-Offset": "40"}, 1, 412),
        ({**PATCH}, 1, 400),
    ]
    for headers, length, status in cases:
        assert status_of(check_patch, state, headers, length, 2_000) == status, headers
    expired_at = 1_000 + UPLOAD_TTL_MS
    assert status_of(check_patch, state, {**PATCH, "Upload-Offset": "40"}, 1, expired_at) == 410


def test_advance_and_completion() -> None:
    state = _state(100, 0)
    later = advance(state, 60, now_ms=5_000)  # type: ignore[arg-type]
    assert (later.offset, later.complete, later.expires_ms) == (60, False, 5_000 + UPLOAD_TTL_MS)
    done = advance(later, 40, now_ms=6_000)
    assert done.complete and done.offset == 100
    assert status_of(advance, later, 41, 6_000) == 413
    assert advance(later, 0, 7_000).offset == 60
