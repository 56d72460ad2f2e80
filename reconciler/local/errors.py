"""Errors of the local run; each message names the bad value and the fix."""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class LocalError(ReconcilerError):
    """The Workspace cannot be run here as asked (exit status 2)."""


class InvalidWorkspaceError(LocalError):
    """The Workspace fails the webhook's defaulting and validation; one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(
            f"{source} is not a valid Workspace ({count}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = problems


class AdapterDirError(LocalError):
    """An adapter has no usable local folder, or a folder names no adapter of the Workspace."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("adapters:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems
