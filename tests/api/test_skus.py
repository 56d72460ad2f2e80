from __future__ import annotations

import pytest

from api.errors import CatalogError
from api.skus import GIB, GpuSku, load_skus, parse_skus


@pytest.mark.parametrize(
    ("name", "count", "gib", "model"),
    [
        ("Standard_NC6s_v3", 1, 16, "V100"),
        ("Standard_NC12s_v3", 2, 16, "V100"),
        ("Standard_NC24s_v3", 4, 16, "V100"),
        ("Standard_NC24rs_v3", 4, 16, "V100"),
        ("Standard_NC4as_T4_v3", 1, 16, "T4"),
        ("Standard_NC64as_T4_v3", 4, 16, "T4"),
        ("Standard_NV36ads_A10_v5", 1, 24, "A10"),
        ("Standard_NV72ads_A10_v5", 2, 24, "A10"),
        ("Standard_NC24ads_A100_v4", 1, 80, "A100"),
        ("Standard_NC96ads_A100_v4", 4, 80, "A100"),
        ("Standard_ND96asr_v4", 8, 40, "A100"),
        ("Standard_ND96amsr_A100_v4", 8, 80, "A100"),
        ("Standard_NC40ads_H100_v5", 1, 94, "H100"),
        ("Standard_ND96isr_H100_v5", 8, 80, "H100"),
        ("p3.2xlarge", 1, 16, "V100"),
        ("p3.16xlarge", 8, 16, "V100"),
        ("p4d.24xlarge", 8, 40, "A100"),
        ("p4de.24xlarge", 8, 80, "A100"),
        ("p5.48xlarge", 8, 80, "H100"),
        ("g4dn.xlarge", 1, 16, "T4"),
        ("g4dn.12xlarge", 4, 16, "T4"),
        ("g5.48xlarge", 8, 24, "A10G"),
        ("g6.12xlarge", 4, 24, "L4"),
    ],
)
def test_families_of_the_issue(name: str, count: int, gib: int, model: str) -> None:
    sku = load_skus().get(name)
    assert sku is not None
    assert sku.gpu_count == count
    assert sku.gpu_memory_bytes == gib * GIB
    assert model in sku.gpu_model
    assert sku.compute_capability is not None


def test_lookup_is_case_insensitive_and_knows_aliases() -> None:
    skus = load_skus()
    sku = skus.get("standard_nc6s_V3")
    assert sku is not None
    assert sku.name == "Standard_NC6s_v3"
    assert "STANDARD_NC12S_V3" in skus
    assert skus.get("Standard_ND96asr_A100_v4") is skus.get("Standard_ND96asr_v4")
    assert skus.get("Standard_NC6s_v9") is None


def test_bfloat16_support_follows_compute_capability() -> None:
    skus = load_skus()
    assert not skus.get("Standard_NC6s_v3").supports_bfloat16  # type: ignore[union-attr]
    assert not skus.get("g4dn.xlarge").supports_bfloat16  # type: ignore[union-attr]
    assert skus.get("Standard_NC24ads_A100_v4").supports_bfloat16  # type: ignore[union-attr]


def test_merge_adds_and_replaces() -> None:
    base = load_skus()
    mine = GpuSku(name="my-l40s-node", gpu_count=2, gpu_memory_mib=48 * 1024, gpu_model="L40S")
    override = GpuSku(name="STANDARD_NC6S_V3", gpu_count=1, gpu_memory_mib=32 * 1024)
    merged = base.merged([mine, override])
    assert merged.get("MY-L40S-NODE") == mine
    assert merged.get("Standard_NC6s_v3") == override
    assert len(merged) == len(base) + 1
    assert base.get("Standard_NC6s_v3").gpu_memory_mib == 16384  # type: ignore[union-attr]


def test_parse_refuses_bad_entries() -> None:
    with pytest.raises(CatalogError, match="gpu_count"):
        parse_skus({"skus": [{"name": "a", "gpu_count": 0, "gpu_memory_mib": 1024}]})
    with pytest.raises(CatalogError, match="twice"):
        parse_skus({"skus": [{"name": "a", "gpu_count": 1, "gpu_memory_mib": 1024}] * 2})
    with pytest.raises(CatalogError, match="unknown keys"):
        parse_skus({"skus": [{"name": "a", "gpu_count": 1, "gpu_memory_mib": 1024, "x": 1}]})
