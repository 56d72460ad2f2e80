from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Runtime
from webhook.config_watch import MISSING, ConfigState, DirConfigSource, poll, reload_once
from webhook.metrics import Metrics


def _state() -> ConfigState:
    return ConfigState(load_presets(), load_skus(), Metrics())


def _sample(state: ConfigState, name: str, **labels: str) -> float:
    return state.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_malformed_config_keeps_the_last_good_settings() -> None:
    state = _state()
    assert state.apply("1", {"defaultRuntime": "transformers", "maxAdapters": "2"})
    assert state.config.default_runtime is Runtime.TRANSFORMERS
    assert state.generation == 1
    good = state.config
    assert not state.apply("2", {"defaultRuntime": "tgi"})
    assert state.config is good
    assert state.last_error is not None
    assert "defaultRuntime: 'tgi'" in state.last_error
    assert _sample(state, "kaito_webhook_config_reloads_total", result="error") == 1
    assert _sample(state, "kaito_webhook_config_ok") == 0
    assert not state.apply("2", {"defaultRuntime": "tgi"})  # the same bad version: once
    assert _sample(state, "kaito_webhook_config_reloads_total", result="error") == 1
    assert state.apply("3", {})
    assert state.config.default_runtime is Runtime.VLLM
    assert _sample(state, "kaito_webhook_config_ok") == 1
    assert _sample(state, "kaito_webhook_config_generation") == 2


def test_extra_skus_reach_the_validation_context() -> None:
    state = _state()
    state.apply("1", {"extraSKUs": "- {name: lab-gpu, gpuCount: 1, gpuMemory: 24Gi}"})
    assert state.context.skus.get("lab-gpu") is not None
    assert state.context.config is state.config
    state.apply(MISSING, {})
    assert state.context.skus.get("lab-gpu") is None


def test_dir_source_and_polling(tmp_path: Path) -> None:
    state = _state()
    source = DirConfigSource(tmp_path / "cfg")

    async def scenario() -> None:
        await reload_once(state, source)
        assert state.version == MISSING
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "maxAdapters").write_text("4")
        (tmp_path / "cfg" / "..data").mkdir()  # the kubelet's bookkeeping is ignored
        task = asyncio.create_task(poll(state, source, 0.01))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if state.config.max_adapters == 4:
                break
        assert state.config.max_adapters == 4
        (tmp_path / "cfg" / "maxAdapters").write_text("four")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if state.last_error:
                break
        assert state.config.max_adapters == 4
        assert "maxAdapters" in (state.last_error or "")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
