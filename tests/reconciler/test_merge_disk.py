"""Issue 12 item 7: NodeClaims of Workspaces served from merged weights request the disk the
merge needs (the download plus the merged copy, from the preset's weight_bytes)."""

from __future__ import annotations

import math

from api.workspace import RUNTIME_ANNOTATION, Workspace
from reconciler.nodes import GIB, MERGE_DISK_MARGIN, NodeClassRef, merge_storage, nodeclaim
from tests.reconciler.goldens import workspace
from tests.reconciler.test_nodes import needs_of


def _with_runtime(ws: Workspace, runtime: str) -> Workspace:
    obj = ws.to_dict()
    obj["metadata"]["annotations"][RUNTIME_ANNOTATION] = runtime
    return Workspace.from_dict(obj)


def test_falcon_with_adapters_on_vllm_requests_disk_for_the_merged_copy() -> None:
    ws = workspace("falcon-adapters")
    needs = needs_of(ws)
    assert needs.preset is not None
    assert not needs.preset.vllm_lora  # Falcon: vLLM has no LoRA, auto picks merge
    want = math.ceil(2 * needs.preset.weight_bytes * MERGE_DISK_MARGIN / GIB)
    assert merge_storage(ws, needs) == f"{want}Gi" == "29Gi"
    claim = nodeclaim(ws, 0, needs, NodeClassRef())
    assert claim["spec"]["resources"]["requests"] == {"nvidia.com/gpu": "1", "storage": "29Gi"}


def test_no_extra_disk_without_a_merge() -> None:
    plain = workspace("falcon-vllm")  # no adapters
    assert merge_storage(plain, needs_of(plain)) is None
    assert (
        "storage"
        not in nodeclaim(plain, 0, needs_of(plain), NodeClassRef())["spec"]["resources"]["requests"]
    )
    merged_by_transformers = _with_runtime(workspace("falcon-adapters"), "transformers")
    assert merge_storage(merged_by_transformers, needs_of(merged_by_transformers)) is None
