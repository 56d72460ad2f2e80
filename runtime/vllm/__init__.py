"""The vLLM runtime launcher: ``python -m runtime.vllm --help``.

It turns a preset, the node's GPUs, the StatefulSet topology, the admin defaults and the adapters
under ``/mnt/adapter`` into a vLLM OpenAI server (or a Ray worker), with adapter strength applied
exactly (see ``runtime.vllm.loras``) and the seed's ``/chat`` in front (``runtime.vllm.front``).
Nothing happens at import time.
"""
