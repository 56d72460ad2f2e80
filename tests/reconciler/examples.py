"""Workspaces used by the reconciler tests: the seed's three examples and a few more."""

from __future__ import annotations

from typing import Any

import yaml

from tests.api import seed

ADAPTER_IMAGE = "myregistry.azurecr.io/adapters/falcon-7b-adapter:0.1"

# The seed's three examples, verbatim, from the one copy the api, webhook and cluster tests share.
SEED_FALCON = seed.FALCON_7B
SEED_TRANSFORMERS = seed.FALCON_7B_TRANSFORMERS
SEED_ADAPTERS = seed.FALCON_7B_ADAPTERS.replace("<YOUR_IMAGE>", ADAPTER_IMAGE)

MULTI_NODE = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-llama-2-13b
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      apps: llama-2-13b
inference:
  preset:
    name: "llama-2-13b"
    presetOptions:
      modelAccessSecret: hf-token
"""

PREFERRED = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-phi-2
resource:
  labelSelector:
    matchLabels:
      apps: phi-2
  preferredNodes:
    - gpu-a
    - gpu-b
inference:
  preset:
    name: "phi-2"
"""

TEMPLATE = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-custom
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      apps: custom
inference:
  template:
    metadata:
      labels:
        team: ml
    spec:
      containers:
        - name: server
          image: registry.example.com/custom-llm:1.0
          ports:
            - containerPort: 8080
          resources:
            limits:
              nvidia.com/gpu: "1"
"""

SURGE = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-phi-3-medium
resource:
  instanceType: "Standard_NC96ads_A100_v4"
  labelSelector:
    matchLabels:
      apps: phi-3
inference:
  preset:
    name: "phi-3-medium-4k-instruct"
  adapters:
    - source:
        name: "phi-3-adapter"
        image: "myregistry.azurecr.io/adapters/phi-3-adapter:0.1"
      strength: "0.2"
"""

PRIVATE_IMAGE = "myregistry.azurecr.io/models/falcon-7b:private-1"

# A private preset image on each runtime: the image carries the weights at /workspace/weights.
PRIVATE_TRANSFORMERS = f"""
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-falcon-7b-private
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
    accessMode: private
    presetOptions:
      image: "{PRIVATE_IMAGE}"
      imagePullSecrets:
        - registry-secret
"""

PRIVATE_VLLM = f"""
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-falcon-7b-private-vllm
resource:
  instanceType: "Standard_NC12s_v3"
  labelSelector:
    matchLabels:
      apps: falcon-7b
inference:
  preset:
    name: "falcon-7b"
    accessMode: private
    presetOptions:
      image: "{PRIVATE_IMAGE}"
"""

SEEDS = {
    "falcon-vllm": SEED_FALCON,
    "falcon-transformers": SEED_TRANSFORMERS,
    "falcon-adapters": SEED_ADAPTERS,
}
# CPU Workspaces (api.cpu): a CPU-capable preset on a CPU instance type; vLLM by default.
CPU_VLLM = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-qwen-cpu
resource:
  instanceType: "Standard_D8s_v5"
  labelSelector:
    matchLabels:
      apps: qwen-cpu
inference:
  preset:
    name: "qwen2.5-0.5b-instruct"
"""

CPU_TRANSFORMERS = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-smollm-cpu
  annotations:
    kaito.sh/runtime: "transformers"
resource:
  count: 2
  instanceType: "m7i.2xlarge"
  labelSelector:
    matchLabels:
      apps: smollm-cpu
inference:
  preset:
    name: "smollm2-360m-instruct"
"""

ALL = {
    **SEEDS,
    "llama-multinode": MULTI_NODE,
    "phi-preferred": PREFERRED,
    "custom-template": TEMPLATE,
    "phi3-surge": SURGE,
    "falcon-private-transformers": PRIVATE_TRANSFORMERS,
    "falcon-private-vllm": PRIVATE_VLLM,
    "qwen-cpu-vllm": CPU_VLLM,
    "smollm-cpu-transformers": CPU_TRANSFORMERS,
}


def load(
    text: str, namespace: str = "default", uid: str = "uid-1", generation: int = 1
) -> dict[str, Any]:
    """The example as the apiserver would return it (namespace, uid and generation set)."""
    obj: dict[str, Any] = yaml.safe_load(text)
    obj["metadata"].update(namespace=namespace, uid=uid, generation=generation)
    return obj
