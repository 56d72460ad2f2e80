"""The exception tree of the ``webhook`` package."""

from __future__ import annotations


class WebhookError(Exception):
    """Base of every error raised by ``webhook``."""


class BadReview(WebhookError):
    """The request is not a usable AdmissionReview: answered with HTTP 400 and this message."""


class SettingsError(WebhookError):
    """A command-line flag or environment variable is out of bounds; names it and the fix."""


class KubeError(WebhookError):
    """The Kubernetes API could not be reached or answered an error."""
