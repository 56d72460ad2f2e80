"""Checks made before the server starts; a refusal exits 3 with its message on stderr and in
the Pod's termination log (``--termination-log``), so the Pod's status says why.

``model_folder_problem`` is the private preset image rule: an absolute ``--model`` is a folder
that must already hold the model (a Hugging Face folder: ``config.json``, tokenizer files,
weights). The reconciler runs private preset images with ``--model /workspace/weights`` and
offline, so an image built without its weights stops here instead of failing later or
reaching for the Hub.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

EXIT_PRESTART = 3
CONVENTION = (
    "a private preset image must hold the model's Hugging Face folder (config.json, "
    "tokenizer files, *.safetensors) at /workspace/weights (manifests/images/README.md, "
    '"Private preset images")'
)


def model_folder_problem(model: str) -> str | None:
    """Why an absolute ``--model`` cannot be served, or None (ids and good folders pass)."""
    if not model.startswith("/"):
        return None
    path = Path(model)
    if not path.is_dir():
        return f"--model {model}: no such folder; {CONVENTION}"
    if not (path / "config.json").is_file():
        return f"--model {model}: the folder has no config.json; {CONVENTION}"
    return None


def report(message: str, termination_log: Path) -> None:
    """The message on stderr and, when it can be written, in the termination log."""
    print(f"error: {message}", file=sys.stderr)
    with contextlib.suppress(OSError):
        termination_log.write_text(message + "\n", encoding="utf-8")
