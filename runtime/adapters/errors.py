"""The adapter library's exception tree.

Every error names the adapter, the bad value and the fix. ``AdapterError`` is the root; the
launchers catch it, print the message and exit non-zero so that the Pod fails fast.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Root of the adapter errors. ``adapter`` is the adapter's name when one is known."""

    def __init__(self, message: str, *, adapter: str | None = None) -> None:
        super().__init__(message)
        self.adapter = adapter


class AdapterArgumentError(AdapterError):
    """A malformed ``--adapter`` value (name, strength syntax, duplicate name)."""


class AdapterNotFoundError(AdapterError):
    """A strength names an adapter that has no directory under the adapter root."""


class AdapterConfigError(AdapterError):
    """The adapter directory or its files are missing or malformed (config, weights, ranks)."""


class UnsupportedAdapterError(AdapterError):
    """A PEFT feature that is not a plain low-rank delta (DoRA, modules_to_save, embeddings...)."""


class IncompatibleAdapterError(AdapterError):
    """The adapter does not fit the base model (or the other adapters it is combined with)."""


class MissingTargetModuleError(IncompatibleAdapterError):
    """The adapter targets modules the base model does not have."""


class ShapeMismatchError(IncompatibleAdapterError):
    """The adapter's delta has another shape than the base weight it targets."""


class BaseModelMismatchError(IncompatibleAdapterError):
    """The adapter was trained for another base model (only raised when asked to be strict)."""


class CheckpointError(AdapterError):
    """The base checkpoint cannot be merged on disk (not safetensors, incomplete, quantised
    targets, or the merged copy cannot be written)."""
