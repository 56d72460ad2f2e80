"""The asyncio Kubernetes client and the informer, against the real apiserver."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certs.pki import make_ca
from reconciler.errors import ConflictError, KubeConfigError, NotFoundError
from reconciler.informer import Informer
from reconciler.kube import Kube, load_credentials, load_in_cluster, load_kubeconfig
from reconciler.resources import CONFIGMAPS, LEASES
from tests.cluster.harness import ControlPlane
from tests.reconciler.aio import sync
from tests.support.kubeconfigs import (
    EXEC_API,
    admin_cert_data,
    exec_plugin,
    exec_runs,
    exec_user,
    service_account_token,
    user_kubeconfig,
)


def _cm(name: str, ns: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def _two_contexts(tmp_path: Path) -> Path:
    cfg = {
        "current-context": "b",
        "contexts": [
            {"name": "a", "context": {"cluster": "c1", "user": "u1"}},
            {"name": "b", "context": {"cluster": "c2", "user": "u2", "namespace": "team"}},
            {"name": "e", "context": {"cluster": "c1", "user": "u3"}},
        ],
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://one:6443/"}},
            {
                "name": "c2",
                "cluster": {"server": "https://two:6443", "certificate-authority": "ca.crt"},
            },
        ],
        "users": [
            {"name": "u1", "user": {"token": "t1"}},
            {
                "name": "u2",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT").decode(),
                    "client-key-data": base64.b64encode(b"KEY").decode(),
                },
            },
            {"name": "u3", "user": {"exec": {"apiVersion": EXEC_API, "command": "aws"}}},
        ],
    }
    path = tmp_path / "kc"
    path.write_text(json.dumps(cfg))
    return path


def test_kubeconfig_contexts_name_the_server_namespace_and_user(tmp_path: Path) -> None:
    path = _two_contexts(tmp_path)
    creds = load_kubeconfig(path)
    assert (creds.server, creds.namespace, creds.context) == ("https://two:6443", "team", "b")
    assert (creds.kubeconfig, creds.user, creds.auth) == (path, "u2", "client certificate")
    one = load_kubeconfig(path, "a")
    assert (one.server, one.namespace, one.auth) == ("https://one:6443", None, "token")
    assert load_kubeconfig(path, "e").auth == "exec"  # accepted: the plugin runs at open
    assert load_credentials("", "a", {"KUBECONFIG": f"{path}:/elsewhere"}) == one


def test_missing_credentials_say_what_to_do(tmp_path: Path) -> None:
    path = _two_contexts(tmp_path)
    with pytest.raises(KubeConfigError, match="no context named 'nope'"):
        load_kubeconfig(path, "nope")
    with pytest.raises(KubeConfigError, match="pass --kubeconfig or set KUBECONFIG"):
        load_credentials("", "", {})
    with pytest.raises(KubeConfigError, match=f"kubeconfig {tmp_path / 'none'} cannot be read"):
        load_kubeconfig(tmp_path / "none")


@sync
async def test_a_failing_exec_plugin_names_the_kubeconfig_the_user_and_the_fix(
    tmp_path: Path,
) -> None:
    plugin = exec_plugin(tmp_path / "plugin", [], fail="error: not logged in; run login first")
    cfg = {
        "current-context": "x",
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "eks-user"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "eks-user", "user": exec_user(plugin)}],
    }
    path = tmp_path / "kc"
    path.write_text(json.dumps(cfg))
    kube = Kube(load_kubeconfig(path), field_manager="kaito-test")
    with pytest.raises(KubeConfigError) as info:
        await kube.open()
    message = str(info.value)
    assert f"kubeconfig {path}, context 'x', user 'eks-user'" in message
    assert f"the exec credential plugin {str(plugin)!r} failed" in message
    assert "not logged in; run login first" in message  # the plugin's own words
    assert "fix: run the plugin's command by hand to see why" in message
    assert exec_runs(plugin) == 1
    # A command that does not exist at all.
    cfg["users"] = [{"name": "eks-user", "user": exec_user(tmp_path / "no-such-plugin")}]
    path.write_text(json.dumps(cfg))
    with pytest.raises(KubeConfigError, match=r"user 'eks-user': the exec credential plugin"):
        await Kube(load_kubeconfig(path), field_manager="kaito-test").open()


@sync
async def test_in_cluster_credentials(tmp_path: Path) -> None:
    ca = make_ca(datetime.now(UTC), timedelta(days=1))
    for name, text in (
        ("token", "tok"),
        ("ca.crt", ca.cert_pem.decode()),
        ("namespace", "kaito-system\n"),
    ):
        (tmp_path / name).write_text(text)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = load_in_cluster(env, tmp_path)
    assert creds.server == "https://10.0.0.1:443"
    assert creds.namespace == "kaito-system"
    assert creds.kubeconfig is None
    v6 = load_in_cluster({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6.server == "https://[fd00::1]:443"
    async with Kube(v6, field_manager="kaito-test") as kube:  # the service account loads
        assert kube.server == "https://[fd00::1]:443"
    (tmp_path / "ca.crt").write_text("")
    with pytest.raises(KubeConfigError, match="the in-cluster service account"):
        await Kube(creds, field_manager="kaito-test").open()


def test_the_client_loads_no_generated_api_or_model_module(tmp_path: Path) -> None:
    """kubernetes_asyncio's package imports 700 generated modules (70 MiB) the client never
    uses; it loads its configuration, transport and credential loaders only."""
    ca = make_ca(datetime.now(UTC), timedelta(days=1))
    (tmp_path / "token").write_text("tok")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    script = f"""
import asyncio, sys
from pathlib import Path
from reconciler.kube import Kube, load_in_cluster
env = {{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}}
async def main():
    async with Kube(load_in_cluster(env, Path({str(tmp_path)!r})), field_manager="t"):
        pass
asyncio.run(main())
print("\\n".join(m for m in sys.modules if m.startswith("kubernetes_asyncio")))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(out.stdout.split())
    assert "kubernetes_asyncio.config.kube_config" in loaded
    assert "kubernetes_asyncio.client.rest" in loaded
    assert not {m for m in loaded if ".models" in m or ".api." in m or m.endswith(".api")}
    assert len(loaded) < 20, sorted(loaded)


@sync
async def test_apply_is_idempotent_and_shared_fields_need_force(
    control_plane: ControlPlane, namespace: str
) -> None:
    calls: list[tuple[str, str, int]] = []
    creds = load_kubeconfig(control_plane.kubeconfig)
    async with (
        Kube(creds, field_manager="kaito-test", on_request=lambda *a: calls.append(a)) as kube,
        Kube(creds, field_manager="someone-else") as other,
    ):
        first = await kube.apply(_cm("x", namespace, {"a": "1"}))
        again = await kube.apply(_cm("x", namespace, {"a": "1"}))
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        with pytest.raises(ConflictError):
            await other.apply(_cm("x", namespace, {"a": "2"}), force=False)
        taken = await other.apply(_cm("x", namespace, {"a": "2"}))
        assert taken["data"] == {"a": "2"}
        # Dropping a field we own removes it; fields of other managers stay.
        await kube.apply(_cm("x", namespace, {"b": "3"}))
        got = await kube.get(CONFIGMAPS, "x", namespace)
        assert got is not None
        assert got["data"] == {"a": "2", "b": "3"}
        assert await kube.get(CONFIGMAPS, "missing", namespace) is None
        assert await kube.delete(CONFIGMAPS, "x", namespace)
        assert not await kube.delete(CONFIGMAPS, "x", namespace)
    assert ("apply", "configmaps", 201) in calls
    assert ("get", "configmaps", 404) in calls


@sync
async def test_list_pages_and_replace_detects_races(
    control_plane: ControlPlane, namespace: str
) -> None:
    creds = load_kubeconfig(control_plane.kubeconfig)
    async with Kube(creds, field_manager="kaito-test") as kube:
        for i in range(7):
            await kube.create(_cm(f"p{i}", namespace, {}))
        listed = await kube.list(CONFIGMAPS, namespace, page_size=3)
        names = {o["metadata"]["name"] for o in listed.items}
        assert {f"p{i}" for i in range(7)} <= names
        assert all(o["kind"] == "ConfigMap" for o in listed.items)
        lease = await kube.create(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "l", "namespace": namespace},
                "spec": {"holderIdentity": "a"},
            }
        )
        lease["spec"]["holderIdentity"] = "b"
        await kube.replace(lease)
        lease["spec"]["holderIdentity"] = "c"  # stale resourceVersion
        with pytest.raises(ConflictError):
            await kube.replace(lease)
        with pytest.raises(NotFoundError):
            await kube.patch(LEASES, "nope", namespace, [{"op": "add", "path": "/x", "value": 1}])


@sync
async def test_informer_follows_changes_and_relists(
    control_plane: ControlPlane, namespace: str
) -> None:
    creds = load_kubeconfig(control_plane.kubeconfig)
    changes: list[tuple[str | None, str | None]] = []
    relists = 0

    def on_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        changes.append(((old or {}).get("data", {}).get("v"), (new or {}).get("data", {}).get("v")))

    def on_relist() -> None:
        nonlocal relists
        relists += 1

    async with Kube(creds, field_manager="kaito-test") as kube:
        inf = Informer(
            kube,
            CONFIGMAPS,
            namespace=namespace,
            label_selector="app=t",
            relist_interval_s=2,
            on_change=on_change,
            on_relist=on_relist,
        )
        task = asyncio.ensure_future(inf.run())
        await asyncio.wait_for(inf.synced.wait(), 10)
        cm = _cm("w", namespace, {"v": "1"})
        cm["metadata"]["labels"] = {"app": "t"}
        await kube.apply(cm)
        await kube.apply(_cm("ignored", namespace, {"v": "x"}))  # not selected
        cm["data"] = {"v": "2"}
        await kube.apply(cm)
        await kube.apply(cm)  # no change: no callback
        await kube.delete(CONFIGMAPS, "w", namespace)
        for _ in range(100):
            if (("2", None) in changes) and relists >= 2:
                break
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert changes == [(None, "1"), ("1", "2"), ("2", None)]
    assert relists >= 2
    assert inf.store == {}


@pytest.fixture
def admin_token(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    """A token of a ServiceAccount bound to cluster-admin (the binding is removed afterwards)."""
    yield service_account_token(control_plane, namespace, "admin", "cluster-admin")
    control_plane.kubectl("delete", "clusterrolebinding", f"{namespace}-admin", check=False)


def _users(cp: ControlPlane, token: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every way a kubeconfig user authenticates, for the same apiserver."""
    cert, key = admin_cert_data(cp)
    (tmp_path / "token").write_text(token)
    return {
        "client certificate data": {
            "client-certificate-data": base64.b64encode(cert.encode()).decode(),
            "client-key-data": base64.b64encode(key.encode()).decode(),
        },
        "token": {"token": token},
        "token file": {"tokenFile": str(tmp_path / "token")},
        "exec token": exec_user(exec_plugin(tmp_path / "token-plugin", [{"token": token}])),
        "exec client certificate": exec_user(
            exec_plugin(
                tmp_path / "cert-plugin",
                [{"clientCertificateData": cert, "clientKeyData": key}],
            )
        ),
    }


@sync
async def test_every_kind_of_kubeconfig_user_reaches_the_apiserver(
    control_plane: ControlPlane, namespace: str, admin_token: str, tmp_path: Path
) -> None:
    for kind, user in _users(control_plane, admin_token, tmp_path).items():
        kc = user_kubeconfig(control_plane, tmp_path / f"{kind}.kc".replace(" ", "-"), user)
        async with Kube(load_kubeconfig(kc), field_manager="kaito-test") as kube:
            name = kind.replace(" ", "-")
            await kube.apply(_cm(name, namespace, {"kind": kind}))
            got = await kube.get(CONFIGMAPS, name, namespace)
            assert got is not None, kind
            assert got["data"] == {"kind": kind}
            assert name in {o["metadata"]["name"] for o in (await kube.list(CONFIGMAPS)).items}
    # Each plugin ran once: a token without an expiry is kept until the apiserver refuses it.
    assert exec_runs(tmp_path / "token-plugin") == 1
    assert exec_runs(tmp_path / "cert-plugin") == 1


@sync
async def test_exec_tokens_are_renewed_on_expiry_and_on_401(
    control_plane: ControlPlane, namespace: str, admin_token: str, tmp_path: Path
) -> None:
    # The first token has expired already: the plugin runs again before the first request,
    # and its second token (valid for long) serves every later request.
    expiring = exec_plugin(
        tmp_path / "expiring",
        [
            {"token": admin_token, "expirationTimestamp": "2000-01-01T00:00:00Z"},
            {"token": admin_token, "expirationTimestamp": "2999-01-01T00:00:00Z"},
        ],
    )
    # The first token is refused (HTTP 401): the plugin runs again and the request is retried.
    refused = exec_plugin(tmp_path / "refused", [{"token": "not-a-token"}, {"token": admin_token}])
    for plugin in (expiring, refused):
        kc = user_kubeconfig(control_plane, tmp_path / f"{plugin.name}.kc", exec_user(plugin))
        async with Kube(load_kubeconfig(kc), field_manager="kaito-test") as kube:
            for _ in range(3):
                assert await kube.get(CONFIGMAPS, "absent", namespace) is None
        assert exec_runs(plugin) == 2, plugin.name
