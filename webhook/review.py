"""AdmissionReview (``admission.k8s.io/v1``) wire types, parsing and responses.

``parse_review(body)`` turns request bytes into an ``AdmissionRequest`` or raises ``BadReview``
(answered with HTTP 400). ``review_response`` builds the JSON answer. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from webhook.errors import BadReview

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class StatusDict(TypedDict, total=False):
    code: int
    message: str
    reason: str


class ResponseDict(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[StatusDict]
    patch: NotRequired[str]
    patchType: NotRequired[str]
    warnings: NotRequired[list[str]]


class ReviewResponseDict(TypedDict):
    apiVersion: str
    kind: str
    response: ResponseDict


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` the webhook uses."""

    uid: str
    operation: str
    kind: GroupVersionKind
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool = False

    @property
    def is_workspace(self) -> bool:
        return self.kind.get("group") == "kaito.sh" and self.kind.get("kind") == "Workspace"


def _field(obj: dict[str, Any], key: str, typ: type, where: str, *, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadReview(f"{where}.{key} is missing")
        return None
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise BadReview(f"{where}.{key} must be a {typ.__name__}, not {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259); send a number or a string")


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview; ``BadReview`` says what is wrong with it."""
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except RecursionError as exc:
        raise BadReview(
            "body is JSON nested deeper than the webhook parses (about 900 levels); "
            "no Kubernetes object needs more than a few dozen"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadReview(f"body is not JSON: {exc}") from exc
    except ValueError as exc:  # integers over sys.get_int_max_str_digits() digits, NaN
        raise BadReview(f"body is not usable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadReview(f"an AdmissionReview must be a JSON object, not {type(doc).__name__}")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise BadReview(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{doc.get('apiVersion')!r} and {doc.get('kind')!r}"
        )
    req = _field(doc, "request", dict, "AdmissionReview")
    uid = _field(req, "uid", str, "request")
    if not uid:
        raise BadReview("request.uid is empty")
    operation = _field(req, "operation", str, "request")
    if operation not in OPERATIONS:
        raise BadReview(f"request.operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    kind = _field(req, "kind", dict, "request")
    gvk: GroupVersionKind = {
        "group": _field(kind, "group", str, "request.kind", required=False) or "",
        "version": _field(kind, "version", str, "request.kind"),
        "kind": _field(kind, "kind", str, "request.kind"),
    }
    obj = _field(req, "object", dict, "request", required=False)
    old = _field(req, "oldObject", dict, "request", required=False)
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise BadReview(f"request.object is missing for {operation}")
    if operation == "UPDATE" and old is None:
        raise BadReview("request.oldObject is missing for UPDATE")
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        kind=gvk,
        namespace=_field(req, "namespace", str, "request", required=False) or "",
        name=_field(req, "name", str, "request", required=False) or "",
        object=obj,
        old_object=old,
        dry_run=bool(_field(req, "dryRun", bool, "request", required=False)),
    )


def review_response(
    uid: str,
    *,
    allowed: bool,
    message: str = "",
    code: int = 200,
    reason: str = "",
    patch: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
) -> ReviewResponseDict:
    """The AdmissionReview answer. A denial carries ``status`` with the message; a patch is
    sent base64-encoded as ``JSONPatch``."""
    response: ResponseDict = {"uid": uid, "allowed": allowed}
    if not allowed:
        status: StatusDict = {"code": code, "message": message}
        if reason:
            status["reason"] = reason
        response["status"] = status
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
