"""Workspaces admission refuses, as they reach the reconciler when admission was off.

Each maps a name to (manifest dict, words the reason must contain)."""

from __future__ import annotations

import copy
from typing import Any

from tests.api import seed
from tests.reconciler import examples


def _adapters(strength: str) -> dict[str, Any]:
    ws = seed.load(examples.SEED_ADAPTERS)
    ws["metadata"]["name"] = f"strength-{abs(hash(strength)) % 10000}"
    ws["inference"]["adapters"][0]["strength"] = strength
    return ws


def _falcon(name: str) -> dict[str, Any]:
    ws = seed.load(examples.SEED_FALCON)
    ws["metadata"]["name"] = name
    return ws


def build() -> dict[str, tuple[dict[str, Any], str]]:
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for strength, words in (
        ("abc", "strength 'abc' is not a decimal number"),
        ("nan", "strength 'nan' is not a decimal number"),
        ("2", "strength '2' is out of range"),
        ("-1", "strength '-1' is not a decimal number"),
    ):
        out[f"strength {strength}"] = (_adapters(strength), words)

    many = seed.load(examples.SEED_ADAPTERS)
    many["metadata"]["name"] = "eleven-adapters"
    one = many["inference"]["adapters"][0]
    many["inference"]["adapters"] = [
        {**copy.deepcopy(one), "source": {"name": f"a{i}", "image": examples.ADAPTER_IMAGE}}
        for i in range(11)
    ]
    out["11 adapters"] = (many, "lists 11 adapters, more than the 10 allowed")

    runtime = _falcon("unknown-runtime")
    runtime["metadata"]["annotations"] = {"kaito.sh/runtime": "tensorrt"}
    out["unknown runtime"] = (runtime, "is not a runtime")

    both = _falcon("preset-and-template")
    both["inference"]["template"] = {"spec": {"containers": [{"name": "a", "image": "b"}]}}
    out["preset and template"] = (both, "sets both preset and template")

    placeholder = seed.load(seed.FALCON_7B_ADAPTERS)
    placeholder["metadata"]["name"] = "placeholder-image"
    out["<YOUR_IMAGE>"] = (placeholder, "is the documentation's placeholder")

    out["name starts with a digit"] = (_falcon("7b-falcon"), "metadata.name: must consist of")

    string_spec = seed.load(examples.TEMPLATE)
    string_spec["metadata"]["name"] = "string-spec"
    string_spec["inference"]["template"]["spec"] = "containers"
    out["template spec is a string"] = (string_spec, "needs at least one container")

    config_name = _falcon("bad-config-name")
    config_name["inference"]["config"] = "Params_1"
    out["inference.config not a name"] = (config_name, "inference.config: is not a ConfigMap name")

    template_config = seed.load(examples.TEMPLATE)
    template_config["metadata"]["name"] = "template-config"
    template_config["inference"]["config"] = "params"
    out["inference.config on a template"] = (
        template_config,
        "inference.config: applies to preset Workspaces only",
    )

    return out


INVALID = build()
