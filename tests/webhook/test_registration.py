from __future__ import annotations

import base64

from webhook import registration


def test_url_configurations() -> None:
    mutating, validating = registration.url_configurations(
        "kaito-wh", "127.0.0.1", 9443, b"PEM", timeout=3
    )
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    m, v = mutating["webhooks"][0], validating["webhooks"][0]
    assert m["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert v["clientConfig"]["url"] == "https://127.0.0.1:9443/validate"
    for hook in (m, v):
        assert hook["rules"][0]["resources"] == ["workspaces"]
        assert hook["rules"][0]["apiGroups"] == ["kaito.sh"]
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 3
        assert hook["admissionReviewVersions"] == ["v1"]


def test_service_configurations_leave_the_bundle_to_the_cert_manager() -> None:
    mutating, _ = registration.service_configurations("kaito-wh", "kaito-system", "kaito-webhook")
    cc = mutating["webhooks"][0]["clientConfig"]
    assert cc == {
        "service": {
            "namespace": "kaito-system",
            "name": "kaito-webhook",
            "path": "/mutate",
            "port": 443,
        }
    }
    _, validating = registration.service_configurations(
        "kaito-wh", "kaito-system", "kaito-webhook", b"CA"
    )
    assert validating["webhooks"][0]["clientConfig"]["caBundle"] == base64.b64encode(b"CA").decode()


def test_the_service_manifest_is_generated() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert registration.main(["--check", str(root / "manifests" / "webhook")]) == 0


def test_the_example_admin_configmap_is_valid() -> None:
    from pathlib import Path

    import yaml

    from api.config import parse_config
    from api.presets import load_presets
    from api.skus import load_skus

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "manifests" / "webhook" / "kaito-config.example.yaml").read_text())
    cfg = parse_config(doc["data"], presets=load_presets(), skus=load_skus())
    assert cfg.allows_instance_type("my-lab-l40s")
    assert cfg.default_instance_type == "Standard_NC12s_v3"
