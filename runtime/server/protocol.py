"""Wire types of the server, declared once (requests: dataclasses; responses: TypedDicts).

``/chat`` follows KAITO's transformers server (the seed); ``/v1/*`` follows OpenAI's API, with
vLLM's sampling extensions (``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``,
``ignore_eos``, ``stop_token_ids``). Fields that are ours are marked ``extension`` and carry
``x-extension: true`` in the OpenAPI schema. Bounds here are the static ones; limits that depend
on the model (vocabulary, context window) are checked in ``planning.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

from runtime.server.schema import ExactlyOne, Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_STOP = 16
MAX_N_CAP = 64
"""The largest --max-n a server can be given: the static bound of n, num_beams and
num_return_sequences, which a served document replaces with its server's --max-n."""
LIMIT_NOTE = " (the maximum stated here is the --max-n of the server that served this document)"

TokenId = Annotated[int, Field("a token id of the model's vocabulary", minimum=0)]
NonEmptyText = Annotated[str, Field("a text prompt (not empty)", min_length=1)]
TokenIds = Annotated[list[TokenId], Field("a sequence of token ids (not empty)", min_items=1)]
Seed = Annotated[
    int | None,
    Field(
        "random seed of the sampler: the same request with the same seed gives the same text",
        minimum=INT64_MIN,
        maximum=INT64_MAX,
    ),
]


# ---- KAITO /chat -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateKwargs:
    """Keyword arguments of Hugging Face generate, with the defaults of KAITO's server.

    The defaults apply whether or not ``generate_kwargs`` is sent (KAITO's seed-era defaults).
    """

    max_length: Annotated[
        int,
        Field(
            "the maximum total number of tokens (prompt + generated); capped by the model's "
            "context window",
            minimum=1,
        ),
    ] = 200
    max_new_tokens: Annotated[
        int | None,
        Field(
            "the maximum number of generated tokens; overrides max_length when set",
            minimum=1,
            extension=True,
        ),
    ] = None
    min_length: Annotated[
        int, Field("the minimum total number of tokens (prompt + generated)", minimum=0)
    ] = 0
    min_new_tokens: Annotated[
        int | None,
        Field("the minimum number of generated tokens", minimum=0, extension=True),
    ] = None
    do_sample: Annotated[bool, Field("sample (true) or take the most likely token (false)")] = True
    early_stopping: Annotated[
        bool | Literal["never"],
        Field("beam search: stop when num_beams candidates are finished"),
    ] = False
    num_beams: Annotated[
        int,
        Field(
            "beam search width; 1 is no beam search; at most the server's --max-n" + LIMIT_NOTE,
            minimum=1,
            maximum=MAX_N_CAP,
            limit="max_n",
        ),
    ] = 1
    num_beam_groups: Annotated[
        int,
        Field(
            "diverse beam search groups; only 1 is supported (transformers 5 moved diverse beam "
            "search to a Hub download)",
            minimum=1,
            maximum=1,
        ),
    ] = 1
    diversity_penalty: Annotated[
        float,
        Field("diverse beam search penalty; only 0 (see num_beam_groups)", minimum=0, maximum=0),
    ] = 0.0
    temperature: Annotated[
        float,
        Field("divides the logits before sampling; > 0 when do_sample", minimum=0, maximum=100),
    ] = 1.0
    top_k: Annotated[
        int, Field("sample among the k most likely tokens; 0 turns it off", minimum=0)
    ] = 10
    top_p: Annotated[
        float,
        Field(
            "sample among the most likely tokens of total probability top_p", minimum=0, maximum=1
        ),
    ] = 1.0
    typical_p: Annotated[
        float,
        Field("locally typical sampling mass; 1 turns it off", exclusive_minimum=0, maximum=1),
    ] = 1.0
    repetition_penalty: Annotated[
        float,
        Field(
            "penalises tokens of the prompt and the output; 1 is no penalty",
            exclusive_minimum=0,
            maximum=100,
        ),
    ] = 1.0
    length_penalty: Annotated[
        float, Field("beam search: exponent of the length in the score", minimum=-100, maximum=100)
    ] = 1.0
    no_repeat_ngram_size: Annotated[
        int, Field("forbid repeating any n-gram of this size; 0 turns it off", minimum=0)
    ] = 0
    encoder_no_repeat_ngram_size: Annotated[
        int,
        Field("forbid repeating n-grams of the prompt of this size; 0 turns it off", minimum=0),
    ] = 0
    bad_words_ids: Annotated[
        list[TokenIds] | list[TokenId] | None,
        Field(
            "token sequences that must not be generated (a flat list: single tokens)",
            max_items=1024,
        ),
    ] = None
    num_return_sequences: Annotated[
        int,
        Field(
            "how many sequences to return (needs do_sample or num_beams >= it); Result joins "
            "them, sequences lists them; at most the server's --max-n" + LIMIT_NOTE,
            minimum=1,
            maximum=MAX_N_CAP,
            limit="max_n",
        ),
    ] = 1
    output_scores: Annotated[
        bool, Field("accepted for compatibility; the response carries text only")
    ] = False
    return_dict_in_generate: Annotated[
        bool, Field("accepted for compatibility; the response carries text only")
    ] = False
    pad_token_id: Annotated[
        int | None, Field("padding token id (default: the tokenizer's)", minimum=0)
    ] = None
    eos_token_id: Annotated[
        int | list[TokenId] | None,
        Field("end-of-sequence token id(s) (default: the model's)", minimum=0, min_items=1),
    ] = None
    forced_bos_token_id: Annotated[
        int | None, Field("token forced as the first generated token", minimum=0)
    ] = None
    forced_eos_token_id: Annotated[
        int | None, Field("token forced as the last token when max_length is reached", minimum=0)
    ] = None
    remove_invalid_values: Annotated[
        bool | None, Field("replace NaN and infinite scores so generation cannot crash")
    ] = None
    seed: Annotated[
        int | None,
        Field(
            "random seed for sampling (each returned sequence i uses seed + i)",
            minimum=INT64_MIN,
            maximum=INT64_MAX,
            extension=True,
        ),
    ] = None


@dataclass(frozen=True)
class TextPart:
    """A text part of a message's content."""

    type: Annotated[Literal["text"], Field("only text parts are supported")]
    text: Annotated[str, Field("the text")]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation (OpenAI's shape)."""

    role: Annotated[
        Literal["system", "developer", "user", "assistant", "tool"],
        Field("who wrote the message"),
    ]
    content: Annotated[
        str | list[TextPart] | None,
        Field("the message text, or a list of text parts", max_items=1024),
    ] = None
    name: Annotated[str | None, Field("an optional participant name", max_length=256)] = None


@dataclass(frozen=True)
class ChatRequest:
    """Body of POST /chat (KAITO's transformers API): a prompt or messages, and options."""

    exactly_one: ClassVar[ExactlyOne] = ExactlyOne(
        ("prompt", "messages"),
        "Text generation parameter prompt required (or messages for a chat model); give "
        "either prompt or messages, not both",
        "prompt",
    )
    prompt: Annotated[
        str | None,
        Field(
            "the text to continue; exactly one of prompt and messages is required",
            min_length=1,
            max_length=10_000_000,
        ),
    ] = None
    messages: Annotated[
        list[ChatMessage] | None,
        Field(
            "a conversation, formatted with the model's chat template; Result is the reply",
            min_items=1,
            max_items=10_000,
        ),
    ] = None
    return_full_text: Annotated[
        bool, Field("return the prompt followed by the generated text (true) or the latter only")
    ] = True
    clean_up_tokenization_spaces: Annotated[
        bool, Field("remove spaces before punctuation when decoding")
    ] = False
    prefix: Annotated[
        str | None,
        Field("text put before the prompt (not returned); lengths count from after it"),
    ] = None
    handle_long_generation: Annotated[
        Literal["hole"] | None,
        Field(
            "'hole' cuts the start of a prompt that leaves no room for the generation; null "
            "refuses such prompts"
        ),
    ] = None
    generate_kwargs: Annotated[
        GenerateKwargs | None, Field("generation parameters (Hugging Face generate)")
    ] = None


class ChatResponse(TypedDict):
    """Answer of POST /chat."""

    Result: Annotated[
        str,
        Field(
            "the generated text (after the prompt when return_full_text); with several "
            "sequences, their concatenation, as KAITO's server returned"
        ),
    ]
    sequences: NotRequired[
        Annotated[
            list[str],
            Field("each returned sequence (only when num_return_sequences > 1)", extension=True),
        ]
    ]


class DetailError(TypedDict):
    """Error answer of /chat and of the health probes."""

    detail: Annotated[str, Field("what is wrong, naming the field and the fix")]


class HealthResponse(TypedDict):
    """Answer of /health and /healthz."""

    status: Annotated[str, Field("'Healthy' when serving; 'Loading' or 'Failed' otherwise")]
    detail: NotRequired[Annotated[str, Field("why the server is not ready")]]


# ---- OpenAI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOptions:
    """Options of a streamed answer."""

    include_usage: Annotated[
        bool, Field("send a last chunk with the token usage before [DONE]")
    ] = False
    continuous_usage_stats: Annotated[
        bool, Field("accepted; usage is sent in the last chunk only", extension=True)
    ] = False


Stop = Annotated[
    str | list[str] | None,
    Field("text that ends the generation (not returned)", max_items=MAX_STOP),
]
MaxTokens = Annotated[
    int | None,
    Field("the maximum number of generated tokens; capped by the context window", minimum=1),
]
Temperature = Annotated[
    float | None, Field("sampling temperature; 0 is greedy", minimum=0, maximum=2)
]
TopP = Annotated[float | None, Field("nucleus sampling mass", exclusive_minimum=0, maximum=1)]
N = Annotated[
    int,
    Field(
        "how many choices to generate; at most the server's --max-n" + LIMIT_NOTE,
        minimum=1,
        maximum=MAX_N_CAP,
        limit="max_n",
    ),
]
Penalty = Annotated[
    float, Field("OpenAI presence/frequency penalty over the output", minimum=-2, maximum=2)
]
TopK = Annotated[
    int | None,
    Field("sample among the k most likely tokens; 0 or -1: all", minimum=-1, extension=True),
]
MinP = Annotated[
    float | None,
    Field(
        "drop tokens below min_p times the top probability", minimum=0, maximum=1, extension=True
    ),
]
RepetitionPenalty = Annotated[
    float | None,
    Field(
        "Hugging Face repetition penalty; 1 is none",
        exclusive_minimum=0,
        maximum=100,
        extension=True,
    ),
]
MinTokens = Annotated[
    int, Field("generate at least this many tokens before EOS", minimum=0, extension=True)
]
IgnoreEos = Annotated[bool, Field("keep generating after EOS", extension=True)]
StopTokenIds = Annotated[
    list[TokenId] | None, Field("token ids that end the generation", max_items=1024, extension=True)
]
User = Annotated[str | None, Field("end-user id (accepted, not used)", max_length=1024)]


@dataclass(frozen=True)
class CompletionRequest:
    """Body of POST /v1/completions (OpenAI)."""

    prompt: Annotated[
        NonEmptyText | list[NonEmptyText] | list[TokenId] | list[TokenIds],
        # One bound for every branch: a token-id prompt is as long as the context allows (checked
        # in planning); the number of prompts in a batch is capped by MAX_PROMPTS in openai_service.
        Field("text(s) or token ids to continue", min_items=1, max_items=10_000_000),
    ]
    model: Annotated[str | None, Field("the served model name (see /v1/models)")] = None
    max_tokens: MaxTokens = 16
    temperature: Temperature = None
    top_p: TopP = None
    n: N = 1
    stream: Annotated[bool, Field("stream server-sent events")] = False
    stream_options: Annotated[StreamOptions | None, Field("streaming options")] = None
    stop: Stop = None
    seed: Seed = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    echo: Annotated[bool, Field("put the prompt before the completion")] = False
    user: User = None
    logprobs: Annotated[None, Field("not supported (null only)")] = None
    suffix: Annotated[None, Field("not supported (null only)")] = None
    best_of: Annotated[int | None, Field("accepted when 1 (or null)", minimum=1, maximum=1)] = None
    logit_bias: Annotated[
        dict[str, float] | None, Field("not supported (null or {} only)", max_properties=0)
    ] = None
    top_k: TopK = None
    min_p: MinP = None
    repetition_penalty: RepetitionPenalty = None
    min_tokens: MinTokens = 0
    ignore_eos: IgnoreEos = False
    stop_token_ids: StopTokenIds = None


@dataclass(frozen=True)
class ResponseFormat:
    """Output format; only plain text is supported."""

    type: Annotated[Literal["text"], Field("only 'text'")]


@dataclass(frozen=True)
class ChatCompletionRequest:
    """Body of POST /v1/chat/completions (OpenAI)."""

    messages: Annotated[
        list[ChatMessage], Field("the conversation so far", min_items=1, max_items=10_000)
    ]
    model: Annotated[str | None, Field("the served model name (see /v1/models)")] = None
    max_tokens: MaxTokens = None
    max_completion_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    n: N = 1
    stream: Annotated[bool, Field("stream server-sent events")] = False
    stream_options: Annotated[StreamOptions | None, Field("streaming options")] = None
    stop: Stop = None
    seed: Seed = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    user: User = None
    logprobs: Annotated[Literal[False] | None, Field("not supported (false or null only)")] = None
    top_logprobs: Annotated[None, Field("not supported (null only)")] = None
    logit_bias: Annotated[
        dict[str, float] | None, Field("not supported (null or {} only)", max_properties=0)
    ] = None
    response_format: Annotated[
        ResponseFormat | None, Field("only {'type': 'text'} is supported")
    ] = None
    tools: Annotated[list[Any] | None, Field("not supported (null or [] only)", max_items=0)] = None
    tool_choice: Annotated[Literal["none"] | None, Field("not supported ('none' only)")] = None
    parallel_tool_calls: Annotated[bool | None, Field("accepted, not used")] = None
    top_k: TopK = None
    min_p: MinP = None
    repetition_penalty: RepetitionPenalty = None
    min_tokens: MinTokens = 0
    ignore_eos: IgnoreEos = False
    stop_token_ids: StopTokenIds = None


FinishReason = Annotated[
    Literal["stop", "length"] | None,
    Field("why generation ended: EOS or a stop string (stop), or the token limit (length)"),
]


class Usage(TypedDict):
    """Token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(TypedDict):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason


class Completion(TypedDict):
    """Answer of POST /v1/completions (also each streamed chunk)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage | None]


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatChoice(TypedDict):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: FinishReason


class ChatCompletion(TypedDict):
    """Answer of POST /v1/chat/completions without streaming."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(TypedDict):
    role: NotRequired[Literal["assistant"]]
    content: NotRequired[str]


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: FinishReason


class ChatCompletionChunk(TypedDict):
    """One server-sent event of a streamed chat completion (the stream ends with [DONE])."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage | None]


class ModelCard(TypedDict):
    id: Annotated[str, Field("the served model name")]
    object: Literal["model"]
    created: int
    owned_by: str
    root: Annotated[str, Field("where the weights were loaded from")]
    max_model_len: Annotated[int, Field("the context window in tokens", extension=True)]


class ModelList(TypedDict):
    """Answer of GET /v1/models."""

    object: Literal["list"]
    data: list[ModelCard]


class ErrorBody(TypedDict):
    message: Annotated[str, Field("what is wrong, naming the field and the fix")]
    type: Annotated[str, Field("error class, e.g. invalid_request_error")]
    param: Annotated[str | None, Field("the offending field")]
    code: Annotated[str | None, Field("a machine-readable code, e.g. context_length_exceeded")]


class ErrorResponse(TypedDict):
    """Error answer of the /v1 endpoints (OpenAI's format)."""

    error: ErrorBody
