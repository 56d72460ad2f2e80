"""The transformers inference server: ``/chat``, the OpenAI API, batching, metrics.

Run it with ``python -m runtime.server --model DIR``; build it in code with
``runtime.server.app.create_app(runtime.server.settings.Settings(model=DIR))``.
Importing this package loads nothing heavy (torch comes with ``runtime.server.app``).
"""
