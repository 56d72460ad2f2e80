"""The baseline for the serving benchmark: what a simple server does.

One ``transformers`` text-generation pipeline, one request at a time (a single worker thread),
behind the same ``POST /chat`` API as KAITO's seed-era server. No batching.

    python bench/baseline_server.py --model DIR --port 5001 [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web


def build_app(model: str, device: str, dtype: str, threads: int | None) -> web.Application:
    import torch
    from transformers import pipeline

    if threads:
        torch.set_num_threads(threads)
    generator = pipeline("text-generation", model=model, device=device, dtype=getattr(torch, dtype))
    pad = generator.tokenizer.pad_token_id if generator.tokenizer is not None else None
    worker = ThreadPoolExecutor(max_workers=1)

    def run(body: dict[str, Any]) -> str:
        kwargs = dict(body.get("generate_kwargs") or {})
        kwargs.setdefault("pad_token_id", pad)
        with torch.inference_mode():
            out = generator(
                body["prompt"], return_full_text=body.get("return_full_text", True), **kwargs
            )
        return "".join(seq["generated_text"] for seq in out)

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.text())
        text = await asyncio.get_running_loop().run_in_executor(worker, run, body)
        return web.json_response({"Result": text})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy"})

    app = web.Application()
    app.router.add_post("/chat", chat)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    web.run_app(
        build_app(args.model, args.device, args.dtype, args.threads),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
