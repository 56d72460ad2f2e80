"""The documented demo (``python -m tests.cluster demo``, ``make demo``) end to end, as a user
runs it: its output shows every step, and nothing is left running afterwards (processes or
ports)."""

from __future__ import annotations

import re
import signal

import pytest

from tests.local.procs import Command, port_free, wait_none_tagged

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STEPS = [
    "==> Kubernetes binaries",
    "==> starting etcd and kube-apiserver",
    "==> starting kube-controller-manager, kube-scheduler and KWOK",
    "==> installing the CRDs",
    "==> starting the test-only cloud",
    "==> starting the webhook: python -m webhook --register",
    "==> the webhook is in force",
    "==> starting the reconciler: python -m reconciler",
    "==> applying the seed's falcon-7b Workspace",
    "==> waiting for it to be Ready",
    "==> Workspace workspace-falcon-7b is Ready",
    "==> NodeClaims",
    "==> nodes:",
    "==> the Deployment, Service and Pod of the Workspace:",
    "==> kubectl get workspace:",
    "==> conditions:",
    "==> building the tiny built-in model",
    "==> serving the seed's adapter Workspace on this machine:",
    "==> POST http://127.0.0.1:",
    "==> /chat answered (HTTP 200",
    "==> demo complete",
    "==> stopping everything",
    "==> stopped",
]


def ports(output: str) -> list[int]:
    """The ports the demo says it listens on: apiserver, webhook, reconciler, runtime."""
    found = [
        *re.findall(r"apiserver ready at https://127\.0\.0\.1:(\d+)", output),
        *re.findall(r"--register on https://127\.0\.0\.1:(\d+)", output),
        *re.findall(r"health on 127\.0\.0\.1:(\d+)", output),
        *re.findall(r"serves falcon-7b at http://127\.0\.0\.1:(\d+)", output),
    ]
    return [int(p) for p in found]


def line_after(lines: list[str], heading: str, pattern: str) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    for line in lines[start + 1 :]:
        if line.startswith("==> "):
            break
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} after {heading!r}")


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind() -> None:
    demo = Command("tests.cluster", ["demo", "--no-real-node"]).start()
    try:
        code = demo.wait(900)
        out, lines = demo.output, demo.lines
        assert code == 0, out
        headings = [line for line in lines if line.startswith("==> ")]
        at = 0
        for step in STEPS:  # every step, in order
            at = next((i for i in range(at, len(headings)) if headings[i].startswith(step)), -1)
            assert at >= 0, f"step {step!r} missing or out of order:\n{out}"
        # The seed's Workspace, verbatim, and the cluster's answer to it.
        assert "    workspace.kaito.sh/workspace-falcon-7b created" in lines
        assert re.search(
            r"workspace-falcon-7b-\w+-0\s+Standard_NC6s_v3\s+1\s+workspace-falcon-7b-\w+-0\s+True",
            line_after(lines, "==> NodeClaims", "workspace-falcon-7b"),
        )
        assert re.search(
            r"workspace-falcon-7b-\w+-0\s+Standard_NC6s_v3\s+1\s+\S+\s+True",
            line_after(lines, "==> nodes:", "workspace-falcon-7b"),
        )
        section = "==> the Deployment, Service and Pod"
        assert re.search(
            r"deployment\.apps/workspace-falcon-7b\s+1/1\s+1\s+1",
            line_after(lines, section, "deployment"),
        )
        assert re.search(
            r"service/workspace-falcon-7b\s+ClusterIP\s+10\.96\.",
            line_after(lines, section, "service/"),
        )
        assert re.search(
            r"pod/workspace-falcon-7b-\S+\s+1/1\s+Running", line_after(lines, section, "pod/")
        )
        assert re.search(
            r"workspace-falcon-7b\s+Standard_NC6s_v3\s+falcon-7b\s+True\s+True\s+True",
            line_after(lines, "==> kubectl get workspace:", "workspace-falcon-7b"),
        )
        for condition, reason in (
            ("ResourceReady", "NodesReady"),
            ("InferenceReady", "ServiceReady"),
            ("WorkspaceSucceeded", "WorkspaceReady"),
        ):
            assert re.search(
                rf"^\s+{condition}\s+True\s+{reason}\s",
                line_after(lines, "==> conditions:", condition),
            )
        # The local run: the seed's adapter Workspace, transformers here, the adapter merged.
        assert "    | ==> here, unlike in the cluster:" in lines
        assert any("runtime: transformers here" in line for line in lines)
        assert any("adapter merged: falcon-7b-adapter at strength 0.2" in line for line in lines)
        assert any(
            line.startswith("    | ==> ready: workspace-falcon-7b serves falcon-7b")
            for line in lines
        )
        assert any('-d \'{"prompt":"YOUR_PROMPT_HERE"}\'' in line for line in lines)
        assert 'with the seed\'s request: {"prompt":"YOUR_PROMPT_HERE"}' in out
        answer = line_after(lines, "==> /chat answered (HTTP 200", "Result")
        assert answer.startswith('    {"Result": "YOUR_PROMPT_HERE')
        assert "    | ==> stopped" in lines  # the local runtime stopped cleanly
        # Nothing left: no process started by the demo, no port it listened on.
        assert wait_none_tagged(demo.marker) == []
        found = ports(out)
        assert len(found) == 4, found
        assert all(port_free(p) for p in found)
    finally:
        demo.kill()


def test_ctrl_c_stops_everything_cleanly() -> None:
    demo = Command("tests.cluster", ["demo", "--no-real-node"]).start()
    try:
        # Interrupt when everything runs at once: control plane, cloud, webhook, reconciler,
        # the local run and its runtime.
        demo.wait_line("    | ==> starting the transformers runtime", 600)
        assert len(wait_none_tagged(demo.marker, 0)) >= 9  # etcd, 3 servers, KWOK, ours
        demo.signal(signal.SIGINT)
        code = demo.wait(120)
        out = demo.output
        assert code == 130, out
        assert "==> interrupted" in out
        assert demo.lines[-1] == "==> stopped"
        assert "error:" not in out
        assert wait_none_tagged(demo.marker) == []
        assert all(port_free(p) for p in ports(out))
    finally:
        demo.kill()
