"""The launcher's exception tree: every pre-start check failure, with the value and the fix.

``LauncherError`` and ``runtime.adapters.AdapterError`` are what ``python -m runtime.vllm``
reports (stderr and the Pod's termination log) before exiting with status 3, so the Pod fails
fast and the reconciler can surface the message in the Workspace status.
"""

from __future__ import annotations


class LauncherError(Exception):
    """Root of the launcher's errors."""


class SettingsError(LauncherError):
    """A setting is missing or inconsistent (topology, ports, names)."""


class FlagError(SettingsError):
    """A flag's value is malformed or out of bounds (exit 2, before any I/O)."""


class PresetError(LauncherError):
    """The preset is unknown or its description is malformed."""


class ModelDoesNotFitError(LauncherError):
    """The model's weights plus a minimal KV cache do not fit the GPUs given."""


class LoraError(LauncherError):
    """The adapters cannot be served by vLLM with these settings (rank limit, architecture)."""


class HardwareError(LauncherError):
    """No usable GPU was found, or the GPUs could not be described."""


class DiskSpaceError(LauncherError):
    """Merge mode: a volume has less free space than the download or the merged copy needs."""


class DownloadError(LauncherError):
    """Merge mode: the base checkpoint could not be fetched from the Hugging Face Hub."""
