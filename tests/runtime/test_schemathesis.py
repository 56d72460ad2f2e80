"""The transformers runtime's OpenAPI document matches what the server does (issue 12 item 6).

Schemathesis (its Python engine, the one its CLI runs) loads the live ``/openapi.json`` of the
real server on the tiny model and runs every phase (examples: the document has none; coverage:
boundaries, negative values, unexpected methods; fuzzing; stateful: no links to follow) with
every check, positive and negative data, deterministic (seeded, derandomized) and with a bounded
number of examples per operation.

Checks: every check schemathesis registers, listed in ``CHECKS`` (a test compares the list with
the registry, so that a new release's check is not silently left out). Not used:
``max_response_time`` only, a limit configured in seconds rather than a registered check (a
wall-clock limit; tests never assert times). ``use_after_free``,
``ensure_resource_availability``, ``ignored_auth`` and ``object_level_authorization`` are
enabled although they have nothing to find here (no resources are created or deleted, no
security schemes): they run, and would fail if the document ever declared such things without
the server honouring them.

The document states every bound that holds for the server that serves it (``--max-n`` included:
``x-server-limit``). Two kinds of rules cannot be in a JSON Schema, and the server refuses them
with a 400 whose message names the field (the document's ``info`` says so):

* the model's limits: token ids below its vocabulary size, prompts that fit its context window;
* relations between fields: ``min_length <= max_length``, ``max_length`` above the prompt's
  length (unless ``max_new_tokens`` is set), no ``temperature: 0`` with ``do_sample``,
  ``num_return_sequences`` needs sampling or as many beams.

For these, and only these, the generated cases are adjusted before they are sent (case hooks,
which the coverage and fuzzing phases both apply): ``fold`` takes token ids at or beyond the
vocabulary modulo its size (negative ones stay invalid), ``acceptable`` drops the schema-valid
bodies that break a relation or would not fit the context (estimated from above); negative
cases are never dropped. Everything else is sent as generated and checked as strictly as
schemathesis checks it (``positive_data_acceptance`` expects a 2xx for schema-valid data).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status
from schemathesis.engine import events as ev
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case

from runtime.server.loader import LoadedModel
from runtime.server.openapi import ROUTES
from tests.runtime.harness import RunningServer, make_settings, start_server

pytestmark = pytest.mark.slow

SEED = 12
MAX_EXAMPLES = 8
"""Examples per operation in the fuzzing phase (the coverage phase adds its own boundary and
negative cases); chosen so that the whole test stays within a few minutes on two cores."""
CONTEXT = 48
"""The fuzzed server's context window (--max-model-len): it bounds every generation's length,
so that hundreds of requests stay quick on CPU."""
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
)
TOKEN_FIELDS = frozenset(
    {
        "pad_token_id",
        "eos_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "bad_words_ids",
        "stop_token_ids",
        "prompt",
    }
)
MESSAGE_OVERHEAD = 8
"""Tokens the test model's chat template adds per message besides its role and content, from
above (it renders ``<|role|>\\n content eos \\n``: 5 of them)."""
GENERATION_PROMPT = 16
"""Tokens of the template's generation prompt, from above (``<|assistant|>\\n``: about 12)."""


# ---- the rules a JSON Schema cannot state (pure) ---------------------------------------------


def fold(value: Any, vocab: int, inside: bool = False) -> Any:
    """``value`` with every integer >= ``vocab`` under a token-id field taken modulo ``vocab``
    (a float that is an integer too: JSON Schema's integers include 3.0); negative ones are
    left as they are (the schema refuses them: the negative phase's)."""
    if isinstance(value, dict):
        return {k: fold(v, vocab, inside or k in TOKEN_FIELDS) for k, v in value.items()}
    if isinstance(value, list):
        return [fold(v, vocab, inside) for v in value]
    if inside and _number(value) and value >= vocab and float(value).is_integer():
        folded = int(value) % vocab
        return float(folded) if isinstance(value, float) else folded
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def token_estimate(value: Any) -> int:
    """An upper bound of the tokens ``value`` (a prompt, prefix or messages) becomes."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) + 2
    if isinstance(value, int) and not isinstance(value, bool):
        return 1
    if isinstance(value, list):
        return sum(token_estimate(v) for v in value) + 2
    if isinstance(value, dict):
        return sum(token_estimate(v) for v in value.values()) + MESSAGE_OVERHEAD
    return 0


def _longest_prompt(body: dict[str, Any]) -> int:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        longest = max(token_estimate(p) for p in prompt)  # a batch: each prompt on its own
    else:
        longest = token_estimate(prompt)
    messages = body.get("messages")
    chat = token_estimate(messages) + GENERATION_PROMPT if messages else 0
    return longest + token_estimate(body.get("prefix")) + chat


def acceptable(body: Any, context: int) -> bool:
    """False for a body that breaks a model limit or a relation between fields."""
    if not isinstance(body, dict):
        return True
    tokens = _longest_prompt(body)
    hole = body.get("handle_long_generation") == "hole"
    if tokens >= context and not hole:
        return False
    gk = body.get("generate_kwargs")
    if gk is None:
        gk = {}
    if not isinstance(gk, dict):
        return True  # not schema-valid: the server refuses it as such

    def num(key: str, default: Any) -> Any:
        value = gk.get(key, default)
        return default if value is None else value

    max_length, min_length = num("max_length", 200), num("min_length", 0)
    max_new = gk.get("max_new_tokens")
    sample, temperature = num("do_sample", True), gk.get("temperature")
    sequences, beams = num("num_return_sequences", 1), num("num_beams", 1)
    if not all(_number(v) for v in (max_length, min_length, sequences, beams)):
        return True  # not schema-valid: the server refuses it as such
    if min_length > max_length:
        return False
    if max_new is None and max_length <= tokens:
        return False
    # with hole, the prompt's tail makes room for the generation, which must fit alone
    if hole and (max_new if _number(max_new) else max_length) >= context:
        return False
    if sample is True and _number(temperature) and temperature == 0:
        return False
    if sequences > 1 and beams > 1:
        return bool(sequences <= beams)
    return not (sequences > 1 and sample is False)


def test_every_check_schemathesis_has_is_enabled() -> None:
    load_all_checks()
    assert set(REGISTERED_CHECKS.get_all_names()) == set(CHECKS)


def test_fold_and_acceptable() -> None:
    assert fold({"prompt": [5, 300, -1], "n": 300}, 256) == {"prompt": [5, 44, -1], "n": 300}
    assert fold({"generate_kwargs": {"bad_words_ids": [[256]]}}, 256) == {
        "generate_kwargs": {"bad_words_ids": [[0]]}
    }
    assert acceptable({"prompt": "x"}, 64)
    assert not acceptable({"prompt": "x" * 64}, 64)
    assert acceptable(
        {
            "prompt": "x" * 64,
            "handle_long_generation": "hole",
            "generate_kwargs": {"max_new_tokens": 8},
        },
        64,
    )
    assert not acceptable({"prompt": "x", "handle_long_generation": "hole"}, 64)  # 200 > 64
    assert not acceptable({"messages": [{"role": "user", "content": "x" * 64}]}, 64)
    assert acceptable({"messages": [{"role": "user", "content": "x"}]}, 64)
    assert not acceptable(
        {"prompt": "x", "generate_kwargs": {"min_length": 9, "max_length": 8}}, 64
    )
    assert not acceptable({"prompt": "x", "generate_kwargs": {"temperature": 0}}, 64)
    assert not acceptable(
        {"prompt": "x", "generate_kwargs": {"do_sample": False, "num_return_sequences": 2}}, 64
    )
    assert acceptable(
        {"prompt": "x", "generate_kwargs": {"num_beams": 2, "num_return_sequences": 2}}, 64
    )
    assert not acceptable(
        {"prompt": "x", "generate_kwargs": {"num_beams": 2, "num_return_sequences": 3}}, 64
    )


# ---- the fuzzer against the real server ------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tiny_model: Path, loaded_tiny: LoadedModel) -> Iterator[RunningServer]:
    running = start_server(make_settings(tiny_model, max_model_len=CONTEXT), loaded_tiny)
    running.wait_ready()
    yield running
    running.stop()


def _config(base_url: str) -> SchemathesisConfig:
    checks: dict[str, Any] = {name: {"enabled": True} for name in CHECKS}
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "request-timeout": 300,
            "output": {"sanitization": {"enabled": False}},  # show token fields as sent
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
            "checks": checks,
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True},
            },
        }
    )


def run_schemathesis(server: RunningServer, vocab: int) -> tuple[list[str], set[str], int]:
    """Run every phase against ``server``: (failures and errors, operations tested, requests)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=_config(server.url))

    @schema.hook
    def map_case(context: Any, case: Case) -> Case:
        case.body = fold(case.body, vocab)
        return case

    @schema.hook
    def filter_case(context: Any, case: Case) -> bool:
        if case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE:
            return True  # refused by the schema already; the rules below are for valid data
        return acceptable(case.body, CONTEXT)

    problems: list[str] = []
    tested: set[str] = set()
    requests = 0
    per_phase: dict[str, list[float]] = {}
    finished = False
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, ev.ScenarioFinished):
            recorder = event.recorder
            requests += len(recorder.interactions)
            stat = per_phase.setdefault(f"{event.phase.value} {recorder.label}", [0, 0.0])
            stat[0] += len(recorder.interactions)
            stat[1] += event.elapsed_time
            if recorder.interactions:
                tested.add(recorder.label)
            if event.status in (Status.FAILURE, Status.ERROR):
                for checks in recorder.checks.values():
                    for check in checks:
                        if check.failure_info is not None:
                            failure = check.failure_info.failure
                            problems.append(
                                f"[{event.phase.value}] {recorder.label}: {check.name}: "
                                f"{failure.title}: {failure.message}\n"
                                f"{check.failure_info.code_sample}"
                            )
        elif isinstance(event, ev.NonFatalError):
            problems.append(f"error in {event.label}: {event.info.format()}")
        elif isinstance(event, ev.FatalError):
            raise event.exception
        elif isinstance(event, ev.EngineFinished):
            finished = True
    assert finished, "the schemathesis engine did not finish"
    for name, (count, seconds) in sorted(per_phase.items()):
        print(f"schemathesis {name}: {int(count)} requests, {seconds:.1f} s")
    return problems, tested, requests


def test_schemathesis_finds_nothing(fuzzed: RunningServer, loaded_tiny: LoadedModel) -> None:
    vocab = loaded_tiny.limits.vocab_size
    assert vocab > 0
    problems, tested, requests = run_schemathesis(fuzzed, vocab)
    assert not problems, "\n\n".join(dict.fromkeys(problems))  # each distinct one once
    # every operation was exercised, but the document itself, which schemathesis loaded (it
    # leaves out the path it read the schema from)
    assert tested == {f"{r.method} {r.path}" for r in ROUTES} - {"GET /openapi.json"}
    assert requests > len(ROUTES) * MAX_EXAMPLES, requests
