"""The transformers inference server: ``/chat``, the OpenAI API, batching, metrics.

Run it with ``python -m runtime.server --model DIR``; build it in code with
``create_app(Settings(model=DIR))``.
"""

from runtime.server.app import create_app
from runtime.server.settings import Settings

__all__ = ["Settings", "create_app"]
