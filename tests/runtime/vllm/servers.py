"""Servers for the /chat front's tests, each on a free port in a thread with its own loop.

vLLM cannot run on this machine's CPU build, so the front's upstream is a stand-in that speaks
vLLM's API with real parts: the transformers runtime's server (its real ``/v1/completions``,
``/v1/models``, ``/health`` and ``/metrics`` on the tiny Llama) plus vLLM's ``/tokenize``
implemented with the same Hugging Face tokenizer calls vLLM makes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aiohttp import web

from runtime.server.app import create_app
from runtime.server.loader import LoadedModel
from runtime.server.settings import Settings
from tests.runtime.harness import ThreadServer

__all__ = ["ThreadServer", "vllm_standin"]


def vllm_standin(settings: Settings, loaded: LoadedModel, model_dir: Path) -> web.Application:
    """The transformers runtime's app plus vLLM's ``POST /tokenize``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def reuse(s: Settings) -> LoadedModel:
        return replace(loaded, limits=replace(loaded.limits, max_n=s.max_n))

    app = create_app(settings, loader=reuse)

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            ids = tokenizer.apply_chat_template(
                body["messages"],
                add_generation_prompt=body.get("add_generation_prompt", True),
                continue_final_message=body.get("continue_final_message", False),
                tokenize=True,
                return_dict=False,
            )
        else:
            ids = tokenizer(
                body["prompt"], add_special_tokens=body.get("add_special_tokens", True)
            ).input_ids
        tokens = [int(t) for t in ids]
        return web.json_response(
            {"count": len(tokens), "max_model_len": loaded.limits.context_length, "tokens": tokens}
        )

    app.router.add_post("/tokenize", tokenize)
    return app
