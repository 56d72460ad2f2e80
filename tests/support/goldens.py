"""The suite's one golden-file mechanism: tests only compare, updating is a separate command.

Each golden suite is a module with ``golden_files() -> Iterator[tuple[Path, str]]`` (every golden
file and the text it must hold) listed in ``SUITES``. A test calls :func:`assert_golden`, which
never writes. After an intended change, rewrite the files and review the diff::

    python -m tests.support.goldens --update      # or: make goldens
    python -m tests.support.goldens               # exit 1 when any file differs
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

SUITES = ("tests.reconciler.goldens", "tests.runtime.vllm.scenarios")
UPDATE_COMMAND = "python -m tests.support.goldens --update"


def assert_golden(path: Path, text: str) -> None:
    """Fail unless ``path`` holds exactly ``text`` (never rewrites it)."""
    assert path.exists(), f"{path} is missing: run `{UPDATE_COMMAND}` and review it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs from what the code renders; if the change is intended, run "
        f"`{UPDATE_COMMAND}` and review the diff"
    )


def _files(suites: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    for name in suites:
        files: Callable[[], Iterator[tuple[Path, str]]] = importlib.import_module(name).golden_files
        yield from files()


def main(argv: list[str] | None = None, suites: tuple[str, ...] = SUITES) -> int:
    p = argparse.ArgumentParser(description="Check (or with --update rewrite) the golden files.")
    p.add_argument("--update", action="store_true", help="rewrite the golden files")
    args = p.parse_args(argv)
    stale = 0
    for path, text in _files(suites):
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale += 1
        print(f"{'updating' if args.update else 'differs'}: {path}")
        if args.update:
            path.write_text(text, encoding="utf-8")
    return 1 if stale and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
