"""Where the Kubernetes client's credentials come from, loaded by ``kubernetes_asyncio``.

:func:`load_kubeconfig` and :func:`load_in_cluster` check the source at once (the file, the
context, its cluster's server; the service account token) and return :class:`Credentials`;
:meth:`Auth.load` then loads the credentials with kubernetes_asyncio's loaders, the asyncio port
of the official client's, so every kubeconfig the official client accepts works: client
certificates (files or data), bearer tokens and token files, ``exec`` credential plugins (EKS's
``aws eks get-token``, GKE's ``gke-gcloud-auth-plugin``, AKS's ``kubelogin``), the ``gcp`` and
``oidc`` auth-providers, and the pod's service account (its rotating token re-read).

A token from an exec plugin is kept until the expiry the plugin states, then the plugin runs
again; after an HTTP 401 :meth:`Auth.reload` runs it again at once. Failures are
``KubeConfigError`` naming the kubeconfig, the context, the user and the fix.

This module reads files and runs plugins; it sends no request to the apiserver
(:mod:`reconciler.kube` does).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.errors import KubeConfigError

if TYPE_CHECKING:
    from kubernetes_asyncio.client.rest import RESTClientObject
    from kubernetes_asyncio.config.kube_config import KubeConfigLoader

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _library() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """kubernetes_asyncio's ``configuration``, ``rest`` (the transport), ``kube_config`` and
    ``incluster_config`` modules, imported on first use without running the package
    ``__init__`` modules: those import every generated API and model class (about 700 modules:
    70 MiB more RSS and seconds of CPU at start) that this client never uses. Where the whole
    package is imported already, it is used as it is."""
    if "kubernetes_asyncio.client" not in sys.modules:
        for name in (
            "kubernetes_asyncio",
            "kubernetes_asyncio.client",
            "kubernetes_asyncio.config",
        ):
            spec = importlib.util.find_spec(name)
            if spec is None:
                raise ModuleNotFoundError(f"{name} is not installed", name=name)
            sys.modules[name] = importlib.util.module_from_spec(spec)
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
        client = sys.modules["kubernetes_asyncio.client"]
        client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
        client.ApiClient = None  # type: ignore[attr-defined]  # named by kube_config, unused here
    return (
        importlib.import_module("kubernetes_asyncio.client.configuration"),
        importlib.import_module("kubernetes_asyncio.client.rest"),
        importlib.import_module("kubernetes_asyncio.config.kube_config"),
        importlib.import_module("kubernetes_asyncio.config.incluster_config"),
    )


@dataclass(frozen=True)
class Credentials:
    """Where to reach one apiserver and where its credentials come from.

    Built by :func:`load_kubeconfig` (which checks the file's structure at once) or
    :func:`load_in_cluster`; the credentials themselves (running an exec plugin, reading
    certificates and tokens) are loaded by ``kubernetes_asyncio`` when a :class:`Kube` opens."""

    server: str
    namespace: str | None = None
    """The namespace the credentials belong to (the context's, in-cluster: the pod's)."""
    kubeconfig: Path | None = None
    """The kubeconfig file; None for the in-cluster service account."""
    context: str = ""
    user: str = ""
    """The kubeconfig user of the context (for messages)."""
    auth: str = ""
    """How the user authenticates: exec, auth-provider, token, client certificate, none."""
    exec_command: str = ""
    """The exec credential plugin's command (for messages)."""
    sa_dir: Path = SA_DIR
    service: tuple[str, str] = ("", "")
    """In-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT."""

    def describe(self) -> str:
        if self.kubeconfig is None:
            return f"the in-cluster service account ({self.sa_dir})"
        return f"kubeconfig {self.kubeconfig}, context {self.context!r}, user {self.user!r}"


def _auth_kind(user: Mapping[str, Any]) -> str:
    if "exec" in user:
        return "exec"
    if "auth-provider" in user:
        return "auth-provider"
    if user.get("token") or user.get("tokenFile"):
        return "token"
    if user.get("client-certificate") or user.get("client-certificate-data"):
        return "client certificate"
    return "none"


def load_kubeconfig(path: str | Path, context: str = "") -> Credentials:
    """The server, namespace and user of a kubeconfig's named (or current) context.

    Raises ``KubeConfigError`` naming the file and the fix when the file cannot be read or the
    context, cluster or server is missing."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"kubeconfig {path} cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(section[:-1])
                return inner if isinstance(inner, dict) else {}
        raise KubeConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise KubeConfigError(
            f"kubeconfig {path} has no current-context; pass --context with one of its contexts"
        )
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", str(ctx.get("cluster", "")))
    user_name = str(ctx.get("user") or "")
    user = named("users", user_name) if user_name else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"kubeconfig {path}: cluster of context {ctx_name!r} has no server")
    return Credentials(
        server=server.rstrip("/"),
        namespace=ctx.get("namespace") or None,
        kubeconfig=path,
        context=str(ctx_name),
        user=user_name,
        auth=_auth_kind(user),
        exec_command=str((user.get("exec") or {}).get("command", "")),
    )


def load_in_cluster(env: Mapping[str, str], sa_dir: Path = SA_DIR) -> Credentials:
    """Credentials of the pod's service account."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "no kubeconfig and not in a cluster (KUBERNETES_SERVICE_HOST is unset); pass "
            "--kubeconfig or set KUBECONFIG"
        )
    if not (sa_dir / "token").exists():
        raise KubeConfigError(f"in-cluster: {sa_dir / 'token'} is missing; mount a service account")
    ns_file = sa_dir / "namespace"
    return Credentials(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        namespace=ns_file.read_text().strip() if ns_file.exists() else None,
        auth="token",
        sa_dir=sa_dir,
        service=(host, port),
    )


def load_credentials(kubeconfig: str, context: str, env: Mapping[str, str]) -> Credentials:
    """``--kubeconfig``, else ``$KUBECONFIG`` (first file), else in-cluster."""
    path = kubeconfig or (env.get("KUBECONFIG", "").split(os.pathsep)[0])
    if path:
        return load_kubeconfig(path, context)
    return load_in_cluster(env)


def load_failure(creds: Credentials, exc: BaseException) -> KubeConfigError:
    """The error for credentials that cannot be loaded, naming where they come from and the fix."""
    where = creds.describe()
    if creds.auth == "exec":
        fix = (
            "run the plugin's command by hand to see why (is it installed and on PATH, are you "
            "logged in to the cloud?), or use a kubeconfig with a token or a client certificate"
        )
        return KubeConfigError(
            f"{where}: the exec credential plugin {creds.exec_command!r} failed: {exc}; fix: {fix}"
        )
    if creds.kubeconfig is None:
        fix = "mount the service account token and CA, or pass --kubeconfig"
    else:
        fix = f"check the {creds.auth} credentials of that user, or pass another kubeconfig"
    return KubeConfigError(f"{where}: cannot load the credentials: {exc}; fix: {fix}")


class Auth:
    """Loaded credentials: kubernetes_asyncio's ``Configuration`` (server, TLS files, token) and,
    for a kubeconfig, its loader (which loads them again)."""

    def __init__(self, creds: Credentials, config: Any, loader: KubeConfigLoader | None) -> None:
        self.creds = creds
        self.config = config
        self.loader = loader

    @classmethod
    async def load(cls, creds: Credentials) -> Auth:
        """Load the credentials (an exec plugin runs now)."""
        configuration, _rest, kube_config, incluster_config = _library()
        config = configuration.Configuration()
        config.connection_pool_maxsize = 64
        loader = None
        try:
            if creds.kubeconfig is not None:
                loader = await kube_config.load_kube_config(
                    config_file=str(creds.kubeconfig),
                    context=creds.context or None,
                    client_configuration=config,
                    persist_config=False,
                )
            else:
                host, port = creds.service
                incluster_config.InClusterConfigLoader(
                    token_filename=str(creds.sa_dir / "token"),
                    cert_filename=str(creds.sa_dir / "ca.crt"),
                    environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
                ).load_and_set(config)
        except Exception as exc:  # the loaders raise ConfigException, OSError, ValueError...
            raise load_failure(creds, exc) from exc
        auth = cls(creds, config, loader)
        if loader is not None and creds.auth == "exec":
            config.refresh_api_key_hook = auth._refresh_exec_token
        return auth

    @property
    def server(self) -> str:
        return str(self.config.host)

    def transport(self) -> RESTClientObject:
        """A new connection pool (aiohttp) with these credentials' TLS settings."""
        rest: Any = _library()[1]
        client: RESTClientObject = rest.RESTClientObject(self.config)
        return client

    async def authorization(self) -> str | None:
        """The ``Authorization`` header (an expired exec token is renewed first)."""
        value = await self.config.get_api_key_with_prefix("BearerToken")
        return str(value) if value else None

    async def _refresh_exec_token(self, config: Any) -> None:
        loader = self.loader
        if loader is None or not hasattr(loader, "exec_plugin_expiry"):
            return  # no expiry stated: the token is kept until the apiserver refuses it
        await loader.load_from_exec_plugin()  # returns at once while the token is valid
        if hasattr(loader, "token"):
            config.api_key["BearerToken"] = loader.token

    @property
    def renewable(self) -> bool:
        """Whether loading again may give other credentials (exec plugins, auth-providers)."""
        return self.loader is not None and self.creds.auth in ("exec", "auth-provider")

    async def reload(self) -> bool:
        """Load the credentials again (exec plugins run again, whatever their expiry); whether
        the client certificate changed (the transport must be rebuilt)."""
        assert self.loader is not None
        if hasattr(self.loader, "exec_plugin_expiry"):
            del self.loader.exec_plugin_expiry
        old_cert = self.config.cert_file
        try:
            await self.loader.load_and_set(self.config)
        except Exception as exc:
            raise load_failure(self.creds, exc) from exc
        return bool(self.config.cert_file != old_cert)
