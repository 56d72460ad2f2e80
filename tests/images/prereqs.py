"""The Debian packages the image builder needs, installed by the project's own setup.

``missing()`` names the commands that are not on PATH; ``ensure()`` runs
``apt-get update && apt-get install -y`` once for the packages that provide them (idempotent:
nothing is run when every command is present) and raises ``PrerequisiteError`` naming what is
still missing and why when that is impossible (not root, no apt-get, apt failing).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.images.errors import PrerequisiteError

# command -> the Debian (bookworm) package that provides it
COMMANDS: dict[str, str] = {
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
}


def missing() -> dict[str, str]:
    """``{command: package}`` for every command the builder needs that is not on PATH."""
    return {cmd: pkg for cmd, pkg in COMMANDS.items() if shutil.which(cmd) is None}


def ensure() -> None:
    """Install what is missing with apt-get; raise ``PrerequisiteError`` if that fails."""
    absent = missing()
    if not absent:
        return
    packages = sorted(set(absent.values()))
    what = ", ".join(f"{c} (Debian package {p})" for c, p in sorted(absent.items()))
    if shutil.which("apt-get") is None:
        raise PrerequisiteError(
            f"the image builder needs {what}; there is no apt-get here: install them with your "
            "system's package manager"
        )
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"the image builder needs {what}; installing them needs root: "
            f"run `sudo apt-get install -y {' '.join(packages)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise PrerequisiteError(
                f"the image builder needs {what}; `{' '.join(argv)}` failed "
                f"(exit {done.returncode}):\n" + "\n".join(tail)
            )
    still = missing()
    if still:
        raise PrerequisiteError(
            f"after apt-get install {' '.join(packages)}, still missing on PATH: "
            + ", ".join(sorted(still))
        )
