from __future__ import annotations

from decimal import Decimal

import pytest

from api import names
from api.errors import QuantityError
from api.quantity import parse_bytes, parse_count, parse_quantity


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:1.36",
        "registry.example.com/adapters/falcon-7b-adapter:0.1",
        "localhost:5000/a/b_c__d-e:v1.2-rc.1",
        "mcr.microsoft.com/aks/kaito/kaito-falcon-7b:0.0.4",
        "ghcr.io/x/y@sha256:" + "a" * 64,
        "ghcr.io/x/y:tag@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(ref: str) -> None:
    assert names.image_reference(ref) is None


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("", "empty"),
        ("<YOUR_IMAGE>", "placeholder"),
        ("registry/<name>:1", "placeholder"),
        ("Registry/UPPER:tag", "not a valid image reference"),
        ("a b", "not a valid image reference"),
        ("x:", "not a valid image reference"),
        ("x@sha256:abc", "not a valid image reference"),
        ("-x", "not a valid image reference"),
    ],
)
def test_invalid_image_references(ref: str, words: str) -> None:
    problem = names.image_reference(ref)
    assert problem is not None
    assert words in problem


def test_dns_names_and_labels() -> None:
    assert names.dns1123_label("falcon-7b-adapter") is None
    assert names.dns1123_label("a" * 64) is not None
    assert names.dns1123_label("Falcon") is not None
    assert names.dns1035_label("workspace-falcon-7b") is None
    assert names.dns1035_label("7b") is not None
    assert names.dns1123_subdomain("gpu-node.example.com") is None
    assert names.dns1123_subdomain("Node_1") is not None
    assert names.label_key("apps") is None
    assert names.label_key("kaito.sh/workspace") is None
    assert names.label_key("/x") is not None
    assert names.label_key("Bad_Prefix/x") is not None
    assert names.label_key("a/" + "b" * 64) is not None
    assert names.label_value("") is None
    assert names.label_value("falcon-7b") is None
    assert names.label_value("-x") is not None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("24Gi", 24 * 2**30),
        ("16G", 16 * 10**9),
        ("1", 1),
        ("1.5Ki", 1536),
        ("500m", Decimal("0.5")),
        ("1e3", 1000),
        ("+2", 2),
    ],
)
def test_quantities(text: str, value: Decimal | int) -> None:
    assert parse_quantity(text) == value


def test_quantity_helpers() -> None:
    assert parse_bytes("16Gi") == 17179869184
    assert parse_bytes("0.5") == 1
    assert parse_count("8") == 8
    assert parse_count("500m") == 0
    for bad in ("lots", "1GB", "", "Gi"):
        with pytest.raises(QuantityError):
            parse_quantity(bad)
    with pytest.raises(QuantityError):
        parse_bytes("-1Gi")
