"""Rules on ``inference.adapters``: count, names, image sources, pull secrets, strength."""

from __future__ import annotations

from collections.abc import Sequence

from api import names
from api.errors import StrengthError
from api.strength import parse_strength
from api.validation.base import ADAPTER_IMAGE_EXAMPLE, FieldError, ValidationContext, secret_rules
from api.workspace import AdapterSpec, Workspace


def adapter_rules(ws: Workspace, ctx: ValidationContext) -> list[FieldError]:
    assert ws.inference is not None
    adapters: Sequence[AdapterSpec] = ws.inference.adapters
    out: list[FieldError] = []
    if not adapters:
        return out
    if ws.inference.template is not None:
        out.append(
            FieldError(
                "inference.adapters",
                "adapters apply to preset models only",
                "remove adapters, or serve a preset with inference.preset",
                "adapters.template",
            )
        )
    limit = ctx.config.max_adapters
    if len(adapters) > limit:
        out.append(
            FieldError(
                "inference.adapters",
                f"lists {len(adapters)} adapters, more than the {limit} allowed",
                f"keep at most {limit} adapters",
                "adapters.count",
            )
        )
    seen: dict[str, int] = {}
    for i, adapter in enumerate(adapters):
        where = f"inference.adapters[{i}]"
        name = adapter.source.name
        problem = names.dns1123_label(name)
        if problem:
            out.append(
                FieldError(
                    f"{where}.source.name",
                    f"{problem} (it names the adapter's init container)",
                    "use a DNS-1123 label such as falcon-7b-adapter",
                    "adapters.name",
                    name,
                )
            )
        elif name in seen:
            out.append(
                FieldError(
                    f"{where}.source.name",
                    f"repeats the name of inference.adapters[{seen[name]}]",
                    "give every adapter a different name",
                    "adapters.name",
                    name,
                )
            )
        else:
            seen[name] = i
        out += image_rules(f"{where}.source.image", adapter.source.image)
        out += secret_rules(adapter.source.image_pull_secrets, f"{where}.source.imagePullSecrets")
        if adapter.strength is not None:
            try:
                parse_strength(adapter.strength)
            except StrengthError as exc:
                out.append(
                    FieldError(
                        f"{where}.strength",
                        str(exc).split(";")[0],
                        'use a decimal string from "0" to "1", e.g. "0.2"',
                        "adapters.strength",
                        adapter.strength,
                    )
                )
    return out


def image_rules(where: str, image: str | None) -> list[FieldError]:
    """An adapter's ``source.image``: required, not the documentation's placeholder, a valid
    image reference."""
    if not image:
        return [
            FieldError(
                where,
                "is required: only images are supported as adapter sources",
                f"set source.image to an image with the adapter files under /data, e.g. "
                f"{ADAPTER_IMAGE_EXAMPLE}",
                "adapters.image",
            )
        ]
    if names.is_placeholder(image):
        return [
            FieldError(
                where,
                "is the documentation's placeholder, not an image",
                f"replace {image} with your adapter image (files under /data), e.g. "
                f"{ADAPTER_IMAGE_EXAMPLE}",
                "adapters.image",
                image,
            )
        ]
    problem = names.image_reference(image)
    if problem:
        return [
            FieldError(
                where,
                problem,
                f"write an image reference such as {ADAPTER_IMAGE_EXAMPLE}",
                "adapters.image",
                image,
            )
        ]
    return []
