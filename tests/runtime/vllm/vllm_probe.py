"""Run vLLM's own code on CPU, in a child process (``VLLM_TARGET_DEVICE=cpu``), for the tests.

Reads one JSON request on stdin (or ``{"jobs": [request, ...]}``, answered by a list, to pay
for vLLM's import once), prints the JSON answer as the last line of stdout:

* ``{"parse": [argv, ...]}``: each ``["vllm", "serve", ...]`` parsed by vLLM's server parser
  (``make_arg_parser``), checked by ``validate_parsed_serve_args``, turned into
  ``AsyncEngineArgs`` (and a ``LoRAConfig`` when LoRA is on); answers the resulting settings,
  or ``{"error": ...}`` for an argument list vLLM refuses.
* ``{"engine": argv}``: the same, then ``create_engine_config()`` (needs a local model folder).
* ``{"lora": {"dir": ..., "modules": [...], "out": file}}``: the adapter loaded by vLLM's
  ``PEFTHelper`` and ``LoRAModel.from_local_checkpoint``; writes each module's
  ``scaling · B @ A`` to ``out`` (safetensors).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _engine_args(argv: list[str]) -> tuple[Any, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    assert argv[:2] == ["vllm", "serve"], argv
    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(argv[2:])
    validate_parsed_serve_args(args)
    if args.model_tag is not None:
        args.model = args.model_tag
    return args, AsyncEngineArgs.from_cli_args(args)


def parse(argv: list[str]) -> dict[str, Any]:
    from vllm.config.lora import LoRAConfig

    args, engine = _engine_args(argv)
    if engine.enable_lora:
        LoRAConfig(max_lora_rank=engine.max_lora_rank, max_loras=engine.max_loras)
    return {
        "model": engine.model,
        "revision": engine.revision,
        "served_model_name": engine.served_model_name,
        "dtype": engine.dtype,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "distributed_executor_backend": engine.distributed_executor_backend,
        "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "trust_remote_code": engine.trust_remote_code,
        "enable_lora": engine.enable_lora,
        "max_lora_rank": engine.max_lora_rank,
        "max_loras": engine.max_loras,
        "host": args.host,
        "port": args.port,
        "chat_template": args.chat_template,
        "lora_modules": [
            {"name": m.name, "path": m.path, "base_model_name": m.base_model_name}
            for m in args.lora_modules or []
        ],
        "enable_prefix_caching": engine.enable_prefix_caching,
    }


def _parse_or_error(argv: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse(argv)
    except SystemExit:  # argparse's error()
        return {"error": stderr.getvalue().strip().splitlines()[-1]}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def engine(argv: list[str]) -> dict[str, Any]:
    _, engine_args = _engine_args(argv)
    config = engine_args.create_engine_config()
    lora = config.lora_config
    return {
        "max_model_len": config.model_config.max_model_len,
        "dtype": str(config.model_config.dtype),
        "served_model_name": config.model_config.served_model_name,
        "max_lora_rank": lora.max_lora_rank if lora else None,
        "max_loras": lora.max_loras if lora else None,
    }


def lora(request: dict[str, Any]) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper

    helper = PEFTHelper.from_local_dir(request["dir"], None)
    model = LoRAModel.from_local_checkpoint(
        request["dir"], set(request["modules"]), helper, device="cpu", dtype=torch.float32
    )
    deltas = {
        name: (layer.lora_b @ layer.lora_a * layer.scaling).contiguous()
        for name, layer in model.loras.items()
    }
    save_file(deltas, request["out"])
    return {"modules": sorted(deltas), "rank": model.rank}


def run(job: dict[str, Any]) -> Any:
    if "parse" in job:
        return [_parse_or_error(argv) for argv in job["parse"]]
    if "engine" in job:
        return engine(job["engine"])
    return lora(job["lora"])


def main() -> None:
    request = json.loads(sys.stdin.read())
    jobs = request.get("jobs", [request])
    answers = [run(job) for job in jobs]
    print(json.dumps(answers if "jobs" in request else answers[0]))


if __name__ == "__main__":
    main()
