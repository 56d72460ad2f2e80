"""Adapter folders in place of adapter images: checks, and the folder of links.

In a cluster, one init container per adapter copies its image's ``/data`` into
``/mnt/adapter/<name>``. Here ``--adapter-dir NAME=DIR`` names that folder, and
``link_adapters`` makes a temporary ``<root>/<name>`` link to it for ``--adapter-root``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def folder_problems(dirs: Mapping[str, Path]) -> list[str]:
    """Folders that do not exist or hold no ``adapter_config.json`` (the image's /data)."""
    problems = []
    for name, folder in dirs.items():
        if not folder.is_dir():
            problems.append(
                f"--adapter-dir {name}={folder}: no such folder; fix: give the folder that holds "
                f"the adapter's files ({ADAPTER_CONFIG} and the weights)"
            )
        elif not (folder / ADAPTER_CONFIG).is_file():
            problems.append(
                f"--adapter-dir {name}={folder}: no {ADAPTER_CONFIG} in it; fix: give the folder "
                "the adapter image holds in /data (a PEFT save_pretrained folder)"
            )
    return problems


def link_adapters(dirs: Mapping[str, Path], root: Path) -> None:
    """``root/<name>`` → each folder (absolute links, so the runtime's working folder is free)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, folder in dirs.items():
        (root / name).symlink_to(folder.resolve(), target_is_directory=True)
