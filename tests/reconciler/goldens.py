"""Golden files of the pure functions: node plans, NodeClaims and workloads for the examples.

Regenerate after an intended change with ``python -m tests.support.goldens --update`` (the
suite's one golden mechanism; ``python -m tests.reconciler.goldens --update`` does this suite only)
and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.config import DEFAULT_CONFIG
from api.defaults import default
from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Workspace
from reconciler.needs import Needs, compute_needs
from reconciler.nodes import plan_nodes
from reconciler.observe import slim
from reconciler.workload import Images, render
from tests.cluster.nodes import fake_gpu_node
from tests.reconciler import examples
from tests.support import goldens

GOLDEN = Path(__file__).parent / "golden"
IMAGES = Images(
    vllm="registry.example.com/kaito/vllm:1.0",
    transformers="registry.example.com/kaito/transformers:1.0",
    vllm_cpu="registry.example.com/kaito/vllm-cpu:1.0",
)


def ready_node(
    name: str, instance_type: str, *, gpus: int, labels: dict[str, str], memory_mib: int = 16384
) -> dict[str, Any]:
    node = fake_gpu_node(name, instance_type, gpus=gpus, labels=labels, gpu_memory_mib=memory_mib)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return slim(node)


def workspace(name: str) -> Workspace:
    return Workspace.from_dict(default(examples.load(examples.ALL[name]), DEFAULT_CONFIG))


def _needs_view(needs: Any) -> dict[str, Any]:
    view = {k: v for k, v in dataclasses.asdict(needs).items() if k not in ("preset",)}
    if view.get("cpu") is None:
        view.pop("cpu", None)  # GPU Workspaces: as before CPU Workspaces existed
    view["preset"] = needs.preset.name if needs.preset else None
    return view


def case(name: str) -> dict[str, Any]:
    ws = workspace(name)
    presets, skus = load_presets(), load_skus()
    nodes: dict[str, dict[str, Any]] = {}
    if name == "phi-preferred":
        for n in ("gpu-a", "gpu-b"):
            nodes[n] = ready_node(n, "on-prem-v100", gpus=1, labels={"apps": "phi-2"})
    needs = compute_needs(ws, presets=presets, skus=skus, config=DEFAULT_CONFIG, nodes=nodes)
    assert isinstance(needs, Needs), needs
    first = plan_nodes(ws, needs, nodes=nodes, claims=[])
    # The claims' nodes come up (what the fake cloud does), and the plan is made again.
    claims = []
    sku = skus.get(ws.resource.instance_type or "")
    for c in first.create:
        claim = json.loads(json.dumps(c))
        claim["metadata"]["uid"] = f"uid-{c['metadata']['name']}"
        claim["status"] = {"nodeName": c["metadata"]["name"]}
        claims.append(claim)
        labels = dict(c["metadata"]["labels"])
        nodes[c["metadata"]["name"]] = ready_node(
            c["metadata"]["name"],
            ws.resource.instance_type or "",
            gpus=sku.gpu_count if sku else 0,
            labels=labels,
        )
    second = plan_nodes(ws, needs, nodes=nodes, claims=claims)
    assert second.ready, second
    assert not second.create, second
    return {
        "needs": _needs_view(needs),
        "first_plan": {"ready": first.ready, "reason": first.reason, "message": first.message},
        "nodeclaims": list(first.create),
        "second_plan": {
            "selected": list(second.selected),
            "reason": second.reason,
            "message": second.message,
        },
        "workload": render(ws, needs, nodes=second.selected, images=IMAGES),
    }


def path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def golden_files() -> Iterator[tuple[Path, str]]:
    """Every golden file of this suite and the text it must hold (for ``tests.support.goldens``)."""
    for name in examples.ALL:
        yield path(name), dump(case(name))


def main(argv: list[str] | None = None) -> int:
    return goldens.main(argv, suites=(__name__,))


if __name__ == "__main__":
    sys.exit(main())
