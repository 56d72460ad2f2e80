"""What a local run shows people (pure): the commands it runs, the URL and the calls to try."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from api.presets import Preset

SEED_CHAT_BODY = '{"prompt":"YOUR_PROMPT_HERE"}'


def display(argv: Sequence[str], preset: Preset | None = None, limit: int = 120) -> str:
    """A command for people: a long argument (the inline chat template) is abbreviated."""
    shown = []
    for arg in argv:
        if preset is not None and preset.chat_template and arg == preset.chat_template:
            shown.append(f"<chat template {preset.chat_template_name} of the preset catalog>")
        elif len(arg) > limit or "\n" in arg:
            shown.append(f"<{len(arg)} characters>")
        else:
            shown.append(shlex.quote(arg))
    return " ".join(shown)


def url_host(host: str) -> str:
    """The address to call: a wildcard listener is reached on the loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def base_url(host: str, port: int) -> str:
    h = url_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def curl_line(url: str) -> str:
    """The seed's basic ``/chat`` example, pointed at ``url``."""
    return (
        f'curl -X POST "{url}/chat" -H "accept: application/json" '
        f"-H \"Content-Type: application/json\" -d '{SEED_CHAT_BODY}'"
    )


def openai_snippet(url: str, model: str) -> str:
    return "\n".join(
        [
            "from openai import OpenAI",
            f'client = OpenAI(base_url="{url}/v1", api_key="unused")',
            f'reply = client.chat.completions.create(model="{model}", '
            'messages=[{"role": "user", "content": "Hello!"}])',
            "print(reply.choices[0].message.content)",
        ]
    )
