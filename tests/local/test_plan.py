"""The local run's pure parts: admission, the rendered Pod, the local rewrites, the hints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.config import DEFAULT_CONFIG, parse_config
from api.workspace import Workspace
from reconciler.errors import SettingsError
from reconciler.local.errors import LocalError
from reconciler.local.plan import (
    PSEUDO_NODE,
    LocalOptions,
    adapter_problems,
    asks_runtime,
    build_plan,
    check,
    config_data,
    localize,
    parse_manifest,
)
from reconciler.local.settings import LocalSettings
from reconciler.local.show import curl_line, display
from tests.api import seed
from tests.reconciler import examples

GOLDEN = Path(__file__).resolve().parents[1] / "reconciler" / "golden"
SEED_CURL = (
    'curl -X POST "http://<SERVICE>:80/chat" -H "accept: application/json" '
    '-H "Content-Type: application/json" -d \'{"prompt":"YOUR_PROMPT_HERE"}\''
)
"""The seed's basic /chat example, verbatim."""
OPTIONS = LocalOptions(
    host="127.0.0.1",
    port=5123,
    adapter_root="/tmp/x/adapter",
    python="/usr/bin/python3",
    memory_bytes=8 << 30,
)
TINY = LocalOptions(**{**OPTIONS.__dict__, "model": "/models/tiny"})


def plan_of(text: str, options: LocalOptions = OPTIONS) -> Any:
    obj = parse_manifest(text, "ws.yaml")
    defaulted, errors = check(obj, DEFAULT_CONFIG)
    assert errors == []
    return build_plan(defaulted, DEFAULT_CONFIG, options, annotated=asks_runtime(obj))


def golden_deployment(name: str) -> dict[str, Any]:
    objects = json.loads((GOLDEN / f"{name}.json").read_text())["workload"]
    dep: dict[str, Any] = objects[-1]
    assert dep["kind"] == "Deployment"
    return dep


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_transformers_seed_renders_the_pod_the_reconciler_golden_holds() -> None:
    plan = plan_of(seed.FALCON_7B_TRANSFORMERS)
    golden = golden_deployment("falcon-transformers")["spec"]["template"]["spec"]
    ours = plan.workload["spec"]["template"]["spec"]
    for key in ("command", "resources", "ports", "startupProbe", "readinessProbe", "volumeMounts"):
        assert ours["containers"][0][key] == golden["containers"][0][key], key
    assert ours["tolerations"] == golden["tolerations"]
    assert ours["volumes"] == golden["volumes"]
    assert plan.rendered == golden["containers"][0]["command"]
    assert plan.shape.startswith("instance type Standard_NC12s_v3")
    assert plan.needs.gpus_per_node == 2
    assert plan.cluster_command is None  # a transformers Workspace: no vLLM note
    assert not any("runtime:" in n for n in plan.notes)


def test_a_vllm_workspace_runs_with_transformers_here_and_says_so() -> None:
    plan = plan_of(seed.FALCON_7B_ADAPTERS_FILLED)
    assert str(plan.runtime) == "vllm"
    assert plan.argv[1:3] == ["-m", "runtime.server"]
    note = next(n for n in plan.notes if n.startswith("runtime:"))
    assert "vLLM needs a GPU cluster" in note
    assert "by default" in note  # the seed's example has no annotation
    # The cluster's vLLM Pod, as the reconciler's golden file holds it.
    golden = golden_deployment("falcon-adapters")["spec"]["template"]["spec"]
    assert plan.cluster_command == golden["containers"][0]["command"]
    # The rendered Pod copies the adapter image in an init container, as in the cluster.
    init = plan.workload["spec"]["template"]["spec"]["initContainers"]
    assert [(c["name"], c["image"]) for c in init] == [("falcon-7b-adapter", seed.ADAPTER_IMAGE)]
    assert [(a.name, a.image, a.strength) for a in plan.adapters] == [
        ("falcon-7b-adapter", seed.ADAPTER_IMAGE, "0.2")
    ]


def test_local_rewrites_with_a_model_folder() -> None:
    plan = plan_of(seed.FALCON_7B_ADAPTERS_FILLED, TINY)
    rendered, argv = plan.rendered, plan.argv
    assert flag(rendered, "--model") == "tiiuae/falcon-7b"
    assert flag(rendered, "--revision") is not None
    assert "--allow-download" in rendered
    assert argv[:3] == ["/usr/bin/python3", "-m", "runtime.server"]
    assert flag(argv, "--model") == "/models/tiny"
    assert "--revision" not in argv
    assert "--max-model-len" not in argv
    assert "--allow-download" not in argv
    assert flag(argv, "--dtype") == "auto"
    assert flag(argv, "--port") == "5123"
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--adapter-root") == "/tmp/x/adapter"
    assert flag(argv, "--adapter") == "falcon-7b-adapter=0.2"
    assert flag(argv, "--served-model-name") == "falcon-7b"
    assert flag(argv, "--chat-template") == flag(rendered, "--chat-template")
    assert plan.served_model_name == "falcon-7b"
    text = "\n".join(plan.notes)
    for word in ("--model /models/tiny", "--revision", "--max-model-len", "--allow-download"):
        assert word in text


def test_without_a_model_the_preset_model_stays_pinned_and_offline() -> None:
    plan = plan_of(seed.FALCON_7B_TRANSFORMERS)
    assert flag(plan.argv, "--model") == "tiiuae/falcon-7b"
    assert flag(plan.argv, "--revision") == "ec89142b67d748a1865ea4451372db8313ada0d8"
    assert flag(plan.argv, "--max-model-len") == "2048"
    assert "--allow-download" not in plan.argv
    online = plan_of(
        seed.FALCON_7B_TRANSFORMERS, LocalOptions(**{**OPTIONS.__dict__, "allow_download": True})
    )
    assert "--allow-download" in online.argv
    # falcon-7b's 12.9 GiB of weights exceed the 8 GiB of OPTIONS.memory_bytes: a warning.
    assert any(n.startswith("warning: falcon-7b holds") for n in plan.notes)


def test_kubernetes_escapes_are_undone_and_unknown_commands_refused() -> None:
    argv, _ = localize(
        ["python", "-m", "runtime.server", "--chat-template", "{{ '$$(HOME)' }}", "--port=5000"],
        OPTIONS,
    )
    assert argv == [
        "/usr/bin/python3", "-m", "runtime.server", "--chat-template", "{{ '$(HOME)' }}",
        "--port", "5123", "--host", "127.0.0.1",
    ]  # fmt: skip
    with pytest.raises(LocalError, match="is not the transformers runtime"):
        localize(["python", "-m", "runtime.vllm", "--preset", "x"], OPTIONS)
    with pytest.raises(LocalError, match="has no value"):
        localize(["python", "-m", "runtime.server", "--model"], OPTIONS)


def test_prepared_nodes_and_multi_node_presets_are_sized_on_a_pseudo_node() -> None:
    preferred = plan_of(examples.PREFERRED)
    assert PSEUDO_NODE in preferred.shape
    assert preferred.needs.gpus_per_node == 1
    assert "pseudo-node" in preferred.shape
    terms = preferred.workload["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == [PSEUDO_NODE]
    # llama-2-13b needs two V100 nodes under vLLM; the transformers runtime serves one node.
    multi = plan_of(examples.MULTI_NODE)
    assert "pseudo-node" in multi.shape
    assert multi.workload["kind"] == "Deployment"
    assert multi.cluster_command is not None
    assert "--node-count" in multi.cluster_command


def test_a_template_workspace_is_refused_with_the_fix() -> None:
    obj = parse_manifest(examples.TEMPLATE, "t.yaml")
    defaulted, errors = check(obj, DEFAULT_CONFIG)
    assert errors == []
    with pytest.raises(LocalError, match=r"inference\.template: .*fix: use inference\.preset"):
        build_plan(defaulted, DEFAULT_CONFIG, OPTIONS)


def test_admission_names_every_problem() -> None:
    obj = yaml.safe_load(seed.FALCON_7B_ADAPTERS)  # the <YOUR_IMAGE> placeholder
    obj["resource"]["instanceType"] = "Standard_NC6s_v3x"
    obj["inference"]["adapters"][0]["strength"] = "2"
    _, errors = check(obj, DEFAULT_CONFIG)
    text = "\n".join(map(str, errors))
    assert "resource.instanceType" in text
    assert '"Standard_NC6s_v3x"' in text
    assert "inference.adapters[0].source.image" in text
    assert "inference.adapters[0].strength" in text
    assert all("; fix: " in str(e) for e in errors)


def test_admin_defaults_apply_as_in_the_webhook() -> None:
    config = parse_config(config_data(yaml.safe_load(CONFIGMAP), "c.yaml"))
    obj = parse_manifest(seed.FALCON_7B, "ws.yaml")
    del obj["resource"]["instanceType"]
    defaulted, errors = check(obj, config)
    assert errors == []
    assert defaulted["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
    assert defaulted["resource"]["instanceType"] == "Standard_NC12s_v3"
    plan = build_plan(defaulted, config, OPTIONS, annotated=False)
    assert plan.cluster_command is None
    assert plan.workload["spec"]["template"]["spec"]["containers"][0]["image"] == "r.example/t:2"


CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: kaito-config, namespace: kaito-system}
data:
  defaultRuntime: transformers
  defaultInstanceType: Standard_NC12s_v3
  transformersImage: r.example/t:2
"""


def test_adapter_folders_must_match_the_adapters() -> None:
    ws = Workspace.from_dict(yaml.safe_load(seed.FALCON_7B_ADAPTERS_FILLED))
    missing = adapter_problems(ws, {})
    assert len(missing) == 1
    assert "falcon-7b-adapter" in missing[0]
    assert seed.ADAPTER_IMAGE in missing[0]
    assert "--adapter-dir falcon-7b-adapter=DIR" in missing[0]
    extra = adapter_problems(ws, {"falcon-7b-adapter": 1, "typo": 1})
    assert len(extra) == 1
    assert "typo" in extra[0]
    assert adapter_problems(ws, {"falcon-7b-adapter": 1}) == []


def test_manifest_reading_errors() -> None:
    with pytest.raises(LocalError, match="2 YAML documents"):
        parse_manifest(seed.FALCON_7B + "---\n" + seed.FALCON_7B, "two.yaml")
    with pytest.raises(LocalError, match="not valid YAML"):
        parse_manifest("a: [", "bad.yaml")
    with pytest.raises(LocalError, match="not a Workspace object"):
        parse_manifest("- 1\n", "list.yaml")


def test_the_curl_line_is_the_seeds_and_long_arguments_are_abbreviated() -> None:
    assert curl_line("http://<SERVICE>:80") == SEED_CURL
    plan = plan_of(seed.FALCON_7B_TRANSFORMERS)
    shown = display(plan.rendered, plan.preset)
    assert "<chat template falcon-instruct of the preset catalog>" in shown
    assert "\n" not in shown


def test_settings() -> None:
    s = LocalSettings.from_argv(
        ["run", "ws.yaml", "--adapter-dir", "a=./x", "--adapter-dir", "b=/y", "--port", "6000"]
    )
    assert s.adapter_dirs == {"a": Path("x"), "b": Path("/y")}
    assert (s.port, s.host, s.dtype, s.allow_download) == (6000, "127.0.0.1", "auto", False)
    with pytest.raises(SettingsError, match="expected NAME=DIR"):
        LocalSettings.from_argv(["run", "ws.yaml", "--adapter-dir", "nodir"])
    with pytest.raises(SettingsError, match="--port='70000': above the maximum 65535; use a"):
        LocalSettings.from_argv(["run", "ws.yaml", "--port", "70000"])


def test_inference_config_is_not_read_here_and_says_so() -> None:
    obj = yaml.safe_load(seed.FALCON_7B_TRANSFORMERS)
    obj["inference"]["config"] = "params"
    plan = plan_of(yaml.safe_dump(obj), TINY)
    assert any(
        n.startswith("inference.config: a local run reads no ConfigMap, so the settings of params")
        for n in plan.notes
    ), plan.notes
    assert "--max-num-seqs" not in plan.argv
