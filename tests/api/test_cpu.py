"""CPU Workspaces (pure): the CPU SKUs of the catalog, the memory rule, the webhook's refusals
and warnings, the reconciler's needs and the runtimes' command lines."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from api.config import AdminConfig, parse_config
from api.cpu import (
    CPU_HEAD_SIZES,
    CpuFit,
    estimate_cpu,
    fitting_cpu_skus,
)
from api.defaults import default
from api.errors import CatalogError, ConfigError
from api.presets import Preset, PresetCatalog, load_presets
from api.sizing import NoFit, fitting_skus
from api.skus import GIB, GpuSku, load_skus, parse_skus
from api.validation import NodeFacts, ValidationContext, validate_create
from api.workspace import Workspace
from reconciler.commands import ServeArgs, transformers_command, vllm_command
from reconciler.needs import Needs, Unsatisfiable, compute_needs
from reconciler.workload import Images
from tests.webhook.support import admission_review
from webhook import decisions
from webhook.review import parse_review

PRESETS = load_presets()
SKUS = load_skus()
CTX = ValidationContext.default()
IMAGES = Images(vllm="registry.example.com/vllm:1", transformers="registry.example.com/tfs:1",
                vllm_cpu="registry.example.com/vllm-cpu:1")  # fmt: skip
CPU_PRESETS = ("qwen2.5-0.5b-instruct", "smollm2-360m-instruct", "tinyllama-1.1b-chat")
SMALL = GpuSku(name="onprem-cpu-4g", gpu_count=0, gpu_memory_mib=0, gpu_model="none",
               vcpus=2, memory_mib=4096)  # fmt: skip


def workspace(preset: str, instance_type: str | None, runtime: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "ws-cpu", "namespace": "default"}
    if runtime:
        meta["annotations"] = {"kaito.sh/runtime": runtime}
    resource: dict[str, Any] = {"labelSelector": {"matchLabels": {"apps": "cpu"}}}
    if instance_type:
        resource["instanceType"] = instance_type
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": resource,
        "inference": {"preset": {"name": preset}},
    }


# ----------------------------------------------------------------------------- catalog


def test_the_catalog_has_azure_and_aws_cpu_skus_without_gpu_facts() -> None:
    cpu = [s for s in SKUS if s.is_cpu]
    assert {s.cloud for s in cpu} == {"azure", "aws"}
    assert {"Standard_D8s_v5", "Standard_D16s_v5", "Standard_E8s_v5", "m7i.2xlarge",
            "c7i.2xlarge", "r7i.xlarge"} <= set(SKUS.cpu_names())  # fmt: skip
    for sku in cpu:
        assert (sku.gpu_count, sku.gpu_memory_mib, sku.compute_capability) == (0, 0, None)
        assert sku.vcpus
        assert sku.memory_mib
        assert sku.name not in SKUS.gpu_names()
    d8 = SKUS.get("standard_d8s_v5")
    assert d8 is not None
    assert (d8.vcpus, d8.memory_bytes) == (8, 32 * GIB)
    assert d8.describe() == "Standard_D8s_v5 (CPU only: 8 vCPUs, 32 GiB memory)"
    r7i = SKUS.get("r7i.2xlarge")
    assert r7i is not None
    assert (r7i.vcpus, r7i.memory_mib) == (8, 64 * 1024)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"gpu_count": 0, "vcpus": 4, "memory_mib": 8192, "gpu_model": "T4"}, "leave out"),
        ({"gpu_count": 0, "vcpus": 4}, "needs vcpus and memory_mib"),
        ({"gpu_count": 0, "vcpus": 0, "memory_mib": 8192}, "vcpus must be a whole number"),
        ({"gpu_count": 0, "vcpus": 4, "memory_mib": 8}, "memory_mib must be a whole number"),
    ],
)
def test_a_cpu_sku_entry_must_give_cpus_and_memory_and_no_gpu(
    entry: dict[str, Any], words: str
) -> None:
    with pytest.raises(CatalogError, match=words):
        parse_skus({"skus": [{"name": "a", **entry}]})


def test_gpu_skus_are_not_sized_on_cpu_and_cpu_skus_hold_no_gpu_preset() -> None:
    qwen = PRESETS.get("qwen2.5-0.5b-instruct")
    falcon = PRESETS.get("falcon-7b")
    assert qwen is not None
    assert falcon is not None
    assert all(not s.is_cpu for s, _ in fitting_skus(falcon, SKUS))
    assert all(not s.is_cpu for s, _ in fitting_skus(qwen, SKUS))
    assert fitting_cpu_skus(falcon, SKUS) != []  # sized by memory; validation refuses it
    # Least memory first (16 GiB), in catalog order among equals.
    assert [s.name for s in fitting_cpu_skus(qwen, SKUS)][:3] == [
        "Standard_D4s_v5",
        "m7i.xlarge",
        "c7i.2xlarge",
    ]


# ----------------------------------------------------------------------------- the rule


def test_the_memory_rule_on_standard_d8s_v5_by_hand() -> None:
    qwen = PRESETS.get("qwen2.5-0.5b-instruct")
    d8 = SKUS.get("Standard_D8s_v5")
    assert qwen is not None
    assert d8 is not None
    fit = estimate_cpu(qwen, d8)
    assert isinstance(fit, CpuFit)
    weights = 494_032_768 * 4  # float32
    usable = int(32 * GIB * 0.9) - 2 * GIB
    assert (fit.weight_bytes, fit.usable_bytes) == (weights, usable)
    per_token = 2 * 24 * 2 * 64 * 4  # layers, KV heads, head_dim, float32
    # 16 sequences of the full 32768-token context: 12 GiB; the node leaves 24 GiB.
    assert (usable - weights) // GIB == 24
    assert fit.kv_cache_gib == 16 * 32768 * per_token // GIB == 12
    assert fit.kv_cache_tokens == 12 * GIB // per_token
    assert fit.max_model_len == 32768
    assert fit.memory_request_bytes == weights + 12 * GIB + 2 * GIB
    assert fit.memory_request == "16Gi"
    as_fit = fit.as_fit()
    assert (as_fit.gpus_per_node, as_fit.node_count, as_fit.dtype) == (0, 1, "float32")


def test_a_node_too_small_says_by_how_much() -> None:
    tiny = PRESETS.get("tinyllama-1.1b-chat")
    assert tiny is not None
    fit = estimate_cpu(tiny, SMALL)
    assert isinstance(fit, NoFit)
    assert "tinyllama-1.1b-chat needs 4.1 GiB of float32 weights" in fit.reason
    assert "onprem-cpu-4g (CPU only: 2 vCPUs, 4 GiB memory) offers 1.6 GiB" in fit.reason
    assert "a node of 8 GiB or more would do" in fit.reason
    # The node the message names does hold it.
    eight = dataclasses.replace(SMALL, memory_mib=8 * 1024)
    assert isinstance(estimate_cpu(tiny, eight), CpuFit)


def _preset(name: str) -> Preset:
    preset = PRESETS.get(name)
    assert preset is not None
    return preset


LONG = dataclasses.replace(
    _preset("qwen2.5-0.5b-instruct"), name="qwen-long", context_length=131072
)


def test_a_short_node_cuts_the_context_not_the_floor() -> None:
    six = dataclasses.replace(SMALL, memory_mib=6 * 1024)
    fit = estimate_cpu(LONG, six)
    assert isinstance(fit, CpuFit)
    # usable 0.9 x 6 GiB - 2 GiB = 3.4 GiB; weights 1.8 GiB: 1 whole GiB left for the KV cache.
    assert fit.kv_cache_gib == 1
    assert fit.kv_cache_tokens == GIB // (2 * 24 * 2 * 64 * 4) == 43690
    assert fit.max_model_len == 43690


def test_the_three_cpu_presets_have_vllm_cpu_kernels() -> None:
    cpu = [p for p in PRESETS if p.cpu_capable]
    assert sorted(p.name for p in cpu) == sorted(CPU_PRESETS)
    assert all(p.head_dim in CPU_HEAD_SIZES for p in cpu)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("preset", CPU_PRESETS)
@pytest.mark.parametrize("runtime", [None, "vllm", "transformers"])
def test_cpu_presets_on_cpu_skus_are_valid(preset: str, runtime: str | None) -> None:
    for sku in ("Standard_D8s_v5", "m7i.xlarge"):
        assert validate_create(default(workspace(preset, sku, runtime)), CTX) == []


def test_a_gpu_preset_on_a_cpu_sku_names_the_field_value_cpu_presets_and_gpu_skus() -> None:
    (err,) = validate_create(default(workspace("falcon-7b", "m7i.2xlarge")), CTX)
    assert err.field == "resource.instanceType"
    assert err.value == "m7i.2xlarge"
    assert err.reason == "instancetype.cpu"
    text = str(err)
    assert "is a CPU-only instance type (m7i.2xlarge (CPU only: 8 vCPUs, 32 GiB memory))" in text
    assert "preset falcon-7b needs GPUs" in text
    assert ("fix: use a CPU-capable preset on it (qwen2.5-0.5b-instruct, "
            "smollm2-360m-instruct, tinyllama-1.1b-chat)") in text  # fmt: skip
    assert "or a GPU instance type that holds it, e.g. p3.2xlarge" in text  # AWS, as m7i


def test_a_cpu_sku_too_small_names_bigger_ones() -> None:
    ctx = ValidationContext.default(AdminConfig(extra_skus=(SMALL,)))
    (err,) = validate_create(default(workspace("tinyllama-1.1b-chat", "onprem-cpu-4g")), ctx)
    assert err.field == "resource.instanceType"
    assert err.reason == "instancetype.toosmall"
    assert "is too small for tinyllama-1.1b-chat on CPU" in str(err)
    assert "fix: use a CPU instance type with more memory, e.g. " in str(err)


def test_vllm_on_cpu_refuses_a_head_dim_without_a_kernel_and_transformers_serves_it() -> None:
    qwen = PRESETS.get("qwen2.5-0.5b-instruct")
    assert qwen is not None
    odd = dataclasses.replace(qwen, name="qwen-head16", head_dim=16)
    ctx = dataclasses.replace(CTX, presets=PresetCatalog([*PRESETS, odd]))
    (err,) = validate_create(default(workspace("qwen-head16", "Standard_D8s_v5")), ctx)
    assert err.field == "metadata.annotations[kaito.sh/runtime]"
    assert "no attention kernel for qwen-head16's head_dim 16" in str(err)
    assert "fix: set kaito.sh/runtime: transformers" in str(err)
    ws = default(workspace("qwen-head16", "Standard_D8s_v5", "transformers"))
    assert validate_create(ws, ctx) == []


def test_preferred_nodes_without_gpus_serve_a_cpu_preset_with_their_cpu_sku() -> None:
    node = {"metadata": {"name": "cpu-1", "labels": {"apps": "cpu"}},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}}}  # fmt: skip
    ctx = ValidationContext.default(nodes={"cpu-1": NodeFacts.from_node(node)})
    obj = workspace("qwen2.5-0.5b-instruct", "Standard_D8s_v5")
    obj["resource"]["preferredNodes"] = ["cpu-1"]
    assert validate_create(default(obj), ctx) == []
    del obj["resource"]["instanceType"]
    (err,) = validate_create(default(obj), ctx)
    assert err.reason == "nodes.gpu"
    assert "when resource.instanceType names their CPU SKU" in str(err)


# ----------------------------------------------------------------------------- webhook


def _warnings(obj: dict[str, Any], ctx: ValidationContext = CTX) -> tuple[str, ...]:
    req = parse_review(json.dumps(admission_review(default(obj))).encode())
    decision = decisions.validate(req, ctx)
    assert decision.allowed, decision.errors
    return decision.warnings


def test_a_cpu_preset_on_a_gpu_sku_is_allowed_with_a_warning() -> None:
    (warning,) = _warnings(workspace("qwen2.5-0.5b-instruct", "Standard_NC4as_T4_v3"))
    assert "qwen2.5-0.5b-instruct is a CPU-capable preset on GPU instance type" in warning
    assert "it will be served on a GPU node (1 x NVIDIA T4 requested)" in warning
    assert "set resource.instanceType to a CPU SKU, e.g. Standard_D4s_v5" in warning
    assert _warnings(workspace("qwen2.5-0.5b-instruct", "Standard_D8s_v5")) == ()


def test_a_cpu_node_that_cuts_the_context_warns() -> None:
    six = dataclasses.replace(SMALL, name="cpu-6g", memory_mib=6144)
    ctx = dataclasses.replace(
        ValidationContext.default(AdminConfig(extra_skus=(six,))),
        presets=PresetCatalog([*PRESETS, LONG]),
    )
    (warning,) = _warnings(workspace("qwen-long", "cpu-6g"), ctx)
    assert "qwen-long will serve at most 43690 tokens of context on cpu-6g" in warning
    assert "the KV cache gets 1 GiB of the node's memory" in warning


# ----------------------------------------------------------------------------- config


def test_vllm_cpu_image_and_cpu_extra_skus_in_the_admin_configmap() -> None:
    cfg = parse_config(
        {
            "vllmCpuImage": "registry.example.com/kaito/vllm-cpu:2.0",
            "extraSKUs": "- {name: my-cpu-node, gpuCount: 0, vcpus: 16, memory: 64Gi}",
        }
    )
    assert cfg.vllm_cpu_image == "registry.example.com/kaito/vllm-cpu:2.0"
    (sku,) = cfg.extra_skus
    assert (sku.is_cpu, sku.vcpus, sku.memory_mib) == (True, 16, 65536)
    assert parse_config({}).vllm_cpu_image is None
    with pytest.raises(ConfigError, match=r"vllmCpuImage: 'Not An Image' .*fix: write e\.g\."):
        parse_config({"vllmCpuImage": "Not An Image"})
    with pytest.raises(ConfigError, match="memory must be the node's memory"):
        parse_config({"extraSKUs": "- {name: c, gpuCount: 0, vcpus: 2}"})


# ----------------------------------------------------------------------------- reconciler


def _needs(obj: dict[str, Any]) -> Needs | Unsatisfiable:
    ws = Workspace.from_dict(default(obj))
    return compute_needs(ws, presets=PRESETS, skus=SKUS, config=AdminConfig(), nodes={})


def test_needs_of_a_cpu_workspace_have_no_gpu_and_the_memory_rule() -> None:
    needs = _needs(workspace("tinyllama-1.1b-chat", "Standard_D4s_v5", "transformers"))
    assert isinstance(needs, Needs)
    assert needs.gpus_per_node == 0
    assert needs.cpu is not None
    assert needs.cpu.kv_cache_gib == 2  # 16 x 2048 tokens x 45056 bytes = 1.4 GiB, rounded up
    assert needs.fit is not None
    assert needs.fit.max_model_len == 2048
    bad = _needs(workspace("falcon-7b", "Standard_D4s_v5"))
    assert isinstance(bad, Unsatisfiable)
    assert "Standard_D4s_v5 is a CPU-only instance type and preset falcon-7b needs GPUs" in (
        bad.message
    )
    gpu = _needs(workspace("qwen2.5-0.5b-instruct", "Standard_NC4as_T4_v3"))
    assert isinstance(gpu, Needs)
    assert (gpu.gpus_per_node, gpu.cpu) == (1, None)


def test_the_runtimes_get_device_cpu_and_the_kv_cache_budget() -> None:
    args = ServeArgs(preset="p", model="org/p", revision="r", dtype="float32",
                     max_model_len=2048, cpu_kv_cache_gib=3)  # fmt: skip
    v = vllm_command(args)
    assert v[v.index("--device") + 1] == "cpu"
    assert v[v.index("--cpu-kv-cache-gib") + 1] == "3"
    t = transformers_command(args)
    assert t[t.index("--device") + 1] == "cpu"
    assert t[t.index("--dtype") + 1] == "float32"
    gpu = dataclasses.replace(args, cpu_kv_cache_gib=None)
    assert "--device" not in vllm_command(gpu)
    assert "--device" not in transformers_command(gpu)


def test_a_prepared_cpu_node_serves_a_cpu_workspace_without_a_nodeclaim() -> None:
    from reconciler.nodes import plan_nodes
    from reconciler.observe import slim
    from reconciler.workload import render
    from tests.cluster.nodes import fake_cpu_node

    obj = workspace("qwen2.5-0.5b-instruct", "Standard_D8s_v5")
    obj["resource"]["preferredNodes"] = ["cpu-1"]
    ws = Workspace.from_dict(default(obj))
    node = fake_cpu_node("cpu-1", "Standard_D8s_v5", cpu="8", memory="32Gi", labels={"apps": "cpu"})
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    nodes = {"cpu-1": slim(node)}
    needs = compute_needs(ws, presets=PRESETS, skus=SKUS, config=AdminConfig(), nodes=nodes)
    assert isinstance(needs, Needs)
    assert needs.cpu is not None
    plan = plan_nodes(ws, needs, nodes=nodes, claims=[])
    assert (plan.ready, plan.selected, plan.create) == (True, ("cpu-1",), ())
    assert plan.message == "1 CPU node(s) ready: cpu-1"
    pod = render(ws, needs, nodes=plan.selected, images=IMAGES)[-1]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "16Gi"}}
    assert pod["containers"][0]["image"] == "registry.example.com/vllm-cpu:1"
    assert "tolerations" not in pod
