"""docs/openapi.yaml documents the contract's REST API and is internally consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"

# (method, path) pairs of the shared contract's REST API.
CONTRACT_OPERATIONS = {
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/rooms"),
    ("post", "/api/rooms"),
    ("get", "/api/rooms/{room}"),
    ("delete", "/api/rooms/{room}"),
    ("get", "/api/rooms/{room}/participants"),
    ("delete", "/api/rooms/{room}/participants/{identity}"),
    ("get", "/api/rooms/{room}/participants/{identity}/stats"),
    ("post", "/api/tokens"),
    ("get", "/api/dev-token"),
    ("get", "/api/rooms/{room}/recording"),
    ("post", "/api/rooms/{room}/recording"),
    ("get", "/api/rooms/{room}/audit"),
    ("post", "/api/rooms/{room}/participants/{identity}/mute"),
    ("put", "/api/rooms/{room}/participants/{identity}/role"),
    ("post", "/api/rooms/{room}/end"),
    # Sharing studies: tus uploads, instant uploads, listing, signed downloads.
    ("options", "/api/rooms/{room}/uploads"),
    ("post", "/api/rooms/{room}/uploads"),
    ("head", "/api/rooms/{room}/uploads/{upload}"),
    ("patch", "/api/rooms/{room}/uploads/{upload}"),
    ("delete", "/api/rooms/{room}/uploads/{upload}"),
    ("post", "/api/rooms/{room}/files/instant"),
    ("get", "/api/rooms/{room}/files"),
    ("delete", "/api/rooms/{room}/files/{file}"),
    ("post", "/api/rooms/{room}/files/{file}/link"),
    ("get", "/files/{file}"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

# Fields of the contract's JSON objects, so a renamed field in the doc is caught.
CONTRACT_FIELDS = {
    "Room": {"id", "participants", "maxParticipants", "createdAt"},
    "Participant": {
        "id",
        "name",
        "role",
        "audioMuted",
        "videoMuted",
        "publishing",
        "joinedAt",
        "connection",
    },
    "TokenRequest": {"room", "identity", "name", "role", "ttlSeconds", "permissions"},
    "TokenResponse": {"token", "identity", "expiresAt", "url"},
    "Error": {"error"},
    "FileInfo": {"id", "name", "size", "type", "sha256", "uploadedBy", "uploadedAt", "dicom"},
    "DicomSummary": {
        "modality",
        "studyDate",
        "studyDescription",
        "seriesCount",
        "instanceCount",
    },
    "DownloadLink": {"url", "expiresAt"},
}
SUCCESS_STATUS = {
    ("options", "/api/rooms/{room}/uploads"): "204",
    ("post", "/api/rooms/{room}/uploads"): "201",
    ("patch", "/api/rooms/{room}/uploads/{upload}"): "204",
    ("delete", "/api/rooms/{room}/uploads/{upload}"): "204",
    ("post", "/api/rooms/{room}/files/instant"): "201",
    ("delete", "/api/rooms/{room}/files/{file}"): "204",
    ("get", "/healthz"): "200",
    ("post", "/api/rooms"): "201",
    ("delete", "/api/rooms/{room}"): "204",
    ("delete", "/api/rooms/{room}/participants/{identity}"): "204",
    ("post", "/api/rooms/{room}/participants/{identity}/mute"): "204",
    ("put", "/api/rooms/{room}/participants/{identity}/role"): "200",
    ("post", "/api/rooms/{room}/end"): "204",
    ("post", "/api/tokens"): "201",
    ("get", "/api/dev-token"): "200",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


def test_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert str(doc["openapi"]).startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]


def test_every_contract_operation_is_documented(doc: dict[str, Any]) -> None:
    documented = set(operations(doc))
    missing = CONTRACT_OPERATIONS - documented
    assert not missing, f"undocumented: {sorted(missing)}"
    extra = documented - CONTRACT_OPERATIONS
    assert not extra, f"documented but not in the contract: {sorted(extra)}"


def test_success_statuses(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for key, op in ops.items():
        expected = SUCCESS_STATUS.get(key, "200")
        assert expected in op["responses"], key
        assert op.get("operationId"), key


def test_path_parameters_are_declared(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            params = [resolve(doc, p["$ref"]) if "$ref" in p else p for p in shared]
            params += [
                resolve(doc, p["$ref"]) if "$ref" in p else p for p in op.get("parameters", [])
            ]
            declared = {p["name"] for p in params if p["in"] == "path"}
            in_template = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            assert declared == in_template, (method, path)


def test_all_refs_resolve(doc: dict[str, Any]) -> None:
    refs = [n["$ref"] for n in walk(doc) if isinstance(n, dict) and "$ref" in n]
    assert refs
    for ref in refs:
        resolve(doc, ref)


def test_schemas_carry_contract_fields(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name, fields in CONTRACT_FIELDS.items():
        assert set(schemas[name]["properties"]) == fields, name
    assert set(schemas["Error"]["properties"]["error"]["required"]) == {"code", "message"}
    assert schemas["Role"]["enum"] == ["host", "specialist", "bedside", "observer"]
    assert set(schemas["Permission"]["enum"]) == {"publish", "subscribe", "admin", "record", "chat"}


def test_bearer_security(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}]
    ops = operations(doc)
    # Open endpoints override the global requirement with an empty list.
    assert ops[("get", "/healthz")]["security"] == []
    assert ops[("get", "/api/dev-token")]["security"] == []
    assert "security" not in ops[("post", "/api/tokens")]


def test_room_id_pattern_matches_auth_module(doc: dict[str, Any]) -> None:
    from signaling.auth import ROOM_ID_PATTERN

    pattern = doc["components"]["schemas"]["RoomIdString"]["pattern"]
    assert pattern == "^" + ROOM_ID_PATTERN.pattern + "$"
