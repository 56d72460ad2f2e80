"""The one exception tree of the test image builder."""

from __future__ import annotations


class ImageError(Exception):
    """Anything that stops an image from being built or found."""


class PrerequisiteError(ImageError):
    """A tool the builder needs is missing and could not be installed."""


class BuildError(ImageError):
    """A build failed; the message names the Dockerfile and the failing step."""
