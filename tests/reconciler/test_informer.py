"""The informer's store, without a server: a write-through never replaces what the watch
already delivered."""

from __future__ import annotations

from typing import Any

from reconciler.informer import Informer, older
from reconciler.resources import DEPLOYMENTS


def _dep(rv: str, ready: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w", "namespace": "ns", "resourceVersion": rv},
        "status": {"readyReplicas": ready},
    }


def test_older_compares_decimal_resource_versions_only() -> None:
    assert older(_dep("9", 0), _dep("10", 0))
    assert not older(_dep("10", 0), _dep("9", 0))
    assert not older(_dep("10", 0), _dep("10", 0))
    assert not older(_dep("", 0), _dep("10", 0))
    assert not older(_dep("abc", 0), _dep("10", 0))


def test_a_write_through_does_not_replace_a_newer_watched_object() -> None:
    changes: list[tuple[Any, Any]] = []
    inf = Informer(None, DEPLOYMENTS, on_change=lambda old, new: changes.append((old, new)))  # type: ignore[arg-type]
    inf.put(_dep("10", 0))  # our apply's response
    inf._upsert(_dep("12", 1))  # the watch: the Deployment controller's status update
    inf.put(_dep("11", 0))  # a later response to an earlier write, overtaken
    assert inf.get("ns", "w")["status"]["readyReplicas"] == 1  # type: ignore[index]
    assert len(changes) == 2
    inf.put(_dep("13", 1))
    assert inf.get("ns", "w")["metadata"]["resourceVersion"] == "13"  # type: ignore[index]
