"""The seed's three Workspace examples, verbatim (shared by api, webhook and cluster tests)."""

from __future__ import annotations

from typing import Any

import yaml

FALCON_7B = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-falcon-7b
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      apps: falcon-7b
inference:
  preset:
    name: "falcon-7b"
"""

FALCON_7B_TRANSFORMERS = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-falcon-7b
  annotations:
    kaito.sh/runtime: "transformers"
resource:
  instanceType: "Standard_NC12s_v3"
  labelSelector:
    matchLabels:
      apps: falcon-7b
inference:
  preset:
    name: "falcon-7b"
"""

FALCON_7B_ADAPTERS = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-falcon-7b
resource:
  instanceType: "Standard_NC12s_v3"
  labelSelector:
    matchLabels:
      apps: falcon-7b
inference:
  preset:
    name: "falcon-7b"
  adapters:
    - source:
        name: "falcon-7b-adapter"
        image:  "<YOUR_IMAGE>"
      strength: "0.2"
"""

ADAPTER_IMAGE = "registry.example.com/adapters/falcon-7b-adapter:0.1"
"""What a user puts in place of ``<YOUR_IMAGE>``."""

FALCON_7B_ADAPTERS_FILLED = FALCON_7B_ADAPTERS.replace("<YOUR_IMAGE>", ADAPTER_IMAGE)

EXAMPLES = {
    "falcon-7b": FALCON_7B,
    "falcon-7b-transformers": FALCON_7B_TRANSFORMERS,
    "falcon-7b-adapters": FALCON_7B_ADAPTERS_FILLED,
}


def load(text: str) -> dict[str, Any]:
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict)
    return obj
