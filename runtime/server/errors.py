"""The runtime server's exception tree.

``ServerError`` is the root. Request problems carry the offending field so that both error formats
(``{"detail": ...}`` for ``/chat``, OpenAI's ``{"error": {...}}`` for ``/v1``) can name it.
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of the runtime server's errors."""


class SettingsError(ServerError):
    """A command-line option has a bad value (the message names the option and the fix)."""


class ModelLoadError(ServerError):
    """The model, its tokenizer or an adapter could not be loaded."""


class RequestError(ServerError):
    """A request the server refuses: a 4xx answer naming the field, the bad value and the fix."""

    status = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.bare_message = message


class ContextLengthError(RequestError):
    """The prompt does not fit in the model's context window."""

    code = "context_length_exceeded"


class ModelNotFoundError(RequestError):
    """The request names a model this server does not serve."""

    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class OverloadedError(RequestError):
    """The bounded queue is full: answer 429 with ``Retry-After``."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReadyError(RequestError):
    """The model is still loading (or failed to load): answer 503."""

    status = 503
    error_type = "service_unavailable"
    code = "model_loading"


class EngineError(ServerError):
    """Generation failed inside the engine (an internal error, answered with 500)."""
