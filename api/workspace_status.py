"""A Workspace's ``status``: ``workerNodes`` and the conditions the reconciler writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.readers import (
    put_present,
    read_int,
    read_list,
    read_str,
    read_strs,
    required_obj,
    required_str,
)


@dataclass(frozen=True)
class Condition:
    """A ``metav1.Condition``."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> Condition:
        def req(key: str) -> str:
            return required_str(obj.get(key), f"{path}.{key}")

        return cls(
            type=req("type"),
            status=req("status"),
            reason=read_str(obj.get("reason"), f"{path}.reason") or "",
            message=read_str(obj.get("message"), f"{path}.message") or "",
            last_transition_time=req("lastTransitionTime"),
            observed_generation=read_int(
                obj.get("observedGeneration"), f"{path}.observedGeneration"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }
        put_present(out, "observedGeneration", self.observed_generation)
        return out


@dataclass(frozen=True)
class WorkspaceStatus:
    worker_nodes: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str = "status") -> WorkspaceStatus:
        conds = []
        for i, item in enumerate(read_list(obj.get("conditions"), f"{path}.conditions")):
            p = f"{path}.conditions[{i}]"
            o = required_obj(item, p)
            conds.append(Condition.from_dict(o, p))
        return cls(
            worker_nodes=read_strs(obj.get("workerNodes"), f"{path}.workerNodes"),
            conditions=tuple(conds),
        )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if reported."""
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_present(out, "workerNodes", list(self.worker_nodes))
        put_present(out, "conditions", [c.to_dict() for c in self.conditions])
        return out
