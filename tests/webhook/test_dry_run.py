"""The Deployment a template Workspace is dry-run as (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.api import seed
from tests.reconciler import examples
from tests.webhook.support import admission_review
from webhook.dry_run import probe_deployment
from webhook.review import AdmissionRequest, parse_review


def _request(obj: dict[str, Any], **kw: Any) -> AdmissionRequest:
    return parse_review(json.dumps(admission_review(obj, **kw)).encode())


def test_a_template_workspace_is_probed_as_its_deployment() -> None:
    ws = seed.load(examples.TEMPLATE)
    probe = probe_deployment(_request(ws))
    assert probe is not None
    assert probe["kind"] == "Deployment"
    assert probe["metadata"] == {
        "name": "workspace-custom",
        "namespace": "default",
        "labels": {"kaito.sh/workspace": "workspace-custom"},
    }
    template = probe["spec"]["template"]
    assert template["spec"] == ws["inference"]["template"]["spec"]
    assert template["metadata"]["labels"] == {
        "team": "ml",
        "kaito.sh/workspace": "workspace-custom",
    }
    assert probe["spec"]["selector"] == {"matchLabels": {"kaito.sh/workspace": "workspace-custom"}}


def test_nothing_to_probe() -> None:
    assert probe_deployment(_request(seed.load(examples.SEED_FALCON))) is None  # a preset
    ws = seed.load(examples.TEMPLATE)
    same = _request(ws, operation="UPDATE", old=copy.deepcopy(ws))
    assert probe_deployment(same) is None  # the template did not change
    broken = seed.load(examples.TEMPLATE)
    broken["inference"]["template"]["spec"] = "containers"
    assert probe_deployment(_request(broken)) is None  # the schema rules report it
    changed = copy.deepcopy(ws)
    changed["inference"]["template"]["spec"]["containers"][0]["image"] = "other:2"
    assert probe_deployment(_request(changed, operation="UPDATE", old=ws)) is not None
