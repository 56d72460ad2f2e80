"""``inference.config`` in the webhook: which updates read the ConfigMap (pure), and a failed
API read admits with a warning (a real HTTPS webhook whose Kubernetes API is unreachable)."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.defaults import default
from api.validation import ValidationContext
from tests.api import seed
from tests.webhook.support import Pki, RunningWebhook, admission_review, make_pki
from webhook import decisions
from webhook.kube import Kube
from webhook.review import parse_review
from webhook.settings import Settings


def _ws(config: str | None = "params") -> dict[str, Any]:
    obj = default(seed.load(seed.FALCON_7B))
    if config is not None:
        obj["inference"]["config"] = config
    return obj


def _request(obj: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
    op = "CREATE" if old is None else "UPDATE"
    return parse_review(json.dumps(admission_review(obj, operation=op, old=old)).encode())


def test_which_requests_read_the_configmap() -> None:
    assert decisions.inference_config_to_read(_request(_ws())) == "params"
    assert decisions.inference_config_to_read(_request(_ws(None))) is None
    assert decisions.inference_config_to_read(_request(_ws("Bad_Name"))) is None
    unchanged = _ws()
    unchanged["metadata"]["labels"] = {"team": "a"}
    assert decisions.inference_config_to_read(_request(unchanged, old=_ws())) is None
    assert decisions.inference_config_to_read(_request(_ws("other"), old=_ws())) == "other"
    assert decisions.inference_config_to_read(_request(_ws(), old=_ws(None))) == "params"
    template = _ws()
    template["inference"] = {"template": {"spec": {}}, "config": "params"}
    assert decisions.inference_config_to_read(_request(template)) is None


def test_problems_join_the_other_errors_and_ignored_keys_warn() -> None:
    denied = decisions.validate(_request(_ws("Bad_Name")), _context())
    assert not denied.allowed
    joined = decisions.with_inference_config(denied, "params", None)
    assert len(joined.errors) == len(denied.errors) + 1
    assert "the ConfigMap does not exist" in joined.message
    ok = decisions.with_inference_config(
        decisions.ALLOW, "params", {"inference_config.yaml": "vllm:\n  swap-space: 4\n"}
    )
    assert ok.allowed
    assert ok.warnings == (
        "inference.config: ConfigMap params sets vllm.swap-space, which have no effect here "
        "(KAITO compatibility); you may delete them",
    )


def _context() -> ValidationContext:
    return ValidationContext.default()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _unreachable_kubeconfig(path: Path) -> Path:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def unreachable(pki: Pki, tmp_path: Path) -> Iterator[RunningWebhook]:
    kubeconfig = _unreachable_kubeconfig(tmp_path / "kc")
    settings = Settings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        template_dry_run=False,
        node_lookup_timeout_seconds=2,
    )
    with RunningWebhook(
        pki, settings=settings, kube_factory=lambda: Kube.connect(kubeconfig)
    ) as hook:
        yield hook


def test_an_api_read_failure_admits_with_a_warning(unreachable: RunningWebhook) -> None:
    answer = unreachable.review("/validate", admission_review(_ws()))
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = [w for w in response["warnings"] if w.startswith("inference.config")]
    assert warning.startswith("inference.config: ConfigMap params could not be read (")
    assert "the controller checks it and reports problems in the Workspace's status" in warning
    # Other rules still refuse as before.
    bad = copy.deepcopy(_ws())
    bad["resource"]["instanceType"] = "Standard_Nope"
    assert unreachable.review("/validate", admission_review(bad))["response"]["allowed"] is False
