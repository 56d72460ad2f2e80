"""The wrapper go.mod is derived from upstream's; the cached binaries are the pinned versions."""

from __future__ import annotations

import subprocess

import pytest

from . import binaries as bins

UPSTREAM_SAMPLE = """module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/foo/bar v1.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/elsewhere/thing => github.com/fork/thing v1.2.3
)
"""


def test_staging_replaces_come_from_upstream_lines_only() -> None:
    assert bins.staging_replaces(UPSTREAM_SAMPLE) == ["k8s.io/api", "k8s.io/client-go"]


def test_staging_version_maps_minor_and_patch() -> None:
    assert bins.staging_version("v1.34.4") == "v0.34.4"
    with pytest.raises(ValueError, match="not a Kubernetes release"):
        bins.staging_version("1.34")


def test_rendered_wrapper_round_trips() -> None:
    text = bins.render_kube_gomod(UPSTREAM_SAMPLE, "v1.34.4")
    assert "go 1.24.0" in text
    assert "godebug default=go1.24" in text
    assert "require k8s.io/kubernetes v1.34.4" in text
    assert bins.wrapper_replaces(text) == {"k8s.io/api": "v0.34.4", "k8s.io/client-go": "v0.34.4"}


def test_ldflags_stamp_both_version_packages() -> None:
    flags = bins.ldflags("v1.34.4")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.34.4" in flags
        assert f"-X {pkg}.gitMinor=34" in flags


def test_committed_wrapper_matches_upstream_staging_list() -> None:
    bins.check_gomod()  # raises BuildError naming the drift


def test_cache_dir_is_overridable(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("KAITO_TEST_BIN_DIR", str(tmp_path))
    assert str(bins.cache_dir()) == str(tmp_path)
    assert bins.binaries().etcd == bins.cache_dir() / f"etcd-{bins.ETCD_VERSION}" / "etcd"


def test_cached_binaries_print_pinned_versions() -> None:
    b = bins.ensure()
    out = subprocess.run(
        [str(b.kube_apiserver), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"Kubernetes {bins.KUBERNETES_VERSION}"
    out = subprocess.run([str(b.etcd), "--version"], capture_output=True, text=True, check=True)
    assert f"etcd Version: {bins.ETCD_VERSION.lstrip('v')}" in out.stdout
    out = subprocess.run([str(b.kwok), "--version"], capture_output=True, text=True, check=True)
    assert bins.KWOK_VERSION in out.stdout
