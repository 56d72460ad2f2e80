"""The committed OpenAPI document, the served one and the app's routes must agree."""

from __future__ import annotations

import json

import httpx
from jsonschema import Draft202012Validator

from runtime.server.openapi import COMMITTED_SPEC, ROUTES, build_openapi, server_limits
from runtime.server.settings import Settings
from tests.runtime.harness import RunningServer
from tests.runtime.test_chat import SEED_BASIC, SEED_FULL

REGENERATE = "python -m runtime.server --print-openapi > runtime/openapi.json"


def test_committed_spec_equals_the_served_one(http: httpx.Client) -> None:
    committed = json.loads(COMMITTED_SPEC.read_text(encoding="utf-8"))
    served = http.get("/openapi.json").json()
    assert served == committed, f"runtime/openapi.json is stale: regenerate it with `{REGENERATE}`"
    assert build_openapi(server_limits(Settings())) == committed  # the default settings'


def test_every_route_is_documented_and_every_documented_route_exists(server: RunningServer) -> None:
    spec = json.loads(COMMITTED_SPEC.read_text(encoding="utf-8"))
    documented = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    registered = {
        (route.method, route.resource.canonical)
        for route in server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert registered == documented
    assert {(r.method, r.path) for r in ROUTES} == documented


def test_the_spec_is_valid_and_accepts_the_seed_bodies() -> None:
    spec = build_openapi(server_limits(Settings()))
    assert spec["openapi"].startswith("3.1")
    schemas = spec["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    chat = spec["paths"]["/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**chat, "components": spec["components"]})
    for body in (SEED_BASIC, SEED_FULL):
        validator.validate(json.loads(body))
    assert not validator.is_valid({"prompt": "x", "generate_kwargs": {"top_p": 7}})
