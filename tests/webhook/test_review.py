from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.webhook.support import admission_review
from webhook.errors import BadReview
from webhook.review import parse_review, review_response


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_parse_a_review() -> None:
    req = parse_review(_body(admission_review({"metadata": {"name": "w"}})))
    assert req.uid.endswith("1")
    assert req.operation == "CREATE"
    assert req.is_workspace
    assert req.name == "w"
    assert req.namespace == "default"


def _mutated(edit: Any) -> bytes:
    doc = admission_review({"metadata": {"name": "w"}})
    edit(doc)
    return _body(doc)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "must be a JSON object"),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}',
            "expected apiVersion",
        ),
        (_mutated(lambda d: d.pop("request")), "AdmissionReview.request is missing"),
        (_mutated(lambda d: d["request"].update(uid="")), "request.uid is empty"),
        (_mutated(lambda d: d["request"].update(uid=7)), "request.uid must be a str"),
        (_mutated(lambda d: d["request"].update(operation="PATCH")), "request.operation"),
        (_mutated(lambda d: d["request"].update(object=None)), "request.object is missing"),
        (_mutated(lambda d: d["request"].update(object=[1])), "request.object must be a dict"),
        (
            _mutated(lambda d: d["request"].update(operation="UPDATE")),
            "request.oldObject is missing",
        ),
        (_mutated(lambda d: d["request"]["kind"].pop("kind")), "request.kind.kind is missing"),
        (_mutated(lambda d: d["request"].update(dryRun="yes")), "request.dryRun must be a bool"),
    ],
)
def test_malformed_reviews_say_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(BadReview) as info:
        parse_review(body)
    assert words in str(info.value)


def test_responses() -> None:
    ok = review_response("u1", allowed=True, patch=[{"op": "add", "path": "/a", "value": 1}])
    assert ok["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(ok["response"]["patch"])) == [
        {"op": "add", "path": "/a", "value": 1}
    ]
    assert "status" not in ok["response"]
    no = review_response("u2", allowed=False, message="m", code=422, reason="Invalid")
    assert no["response"]["status"] == {"code": 422, "message": "m", "reason": "Invalid"}
    assert "patch" not in no["response"]
    assert review_response("u3", allowed=True, warnings=["w"])["response"]["warnings"] == ["w"]
