"""Fixtures for the runtime tests: the tiny model, loaded once, and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.server.loader import LoadedModel, load_model
from tests.runtime.harness import RunningServer, make_settings, start_server
from tests.support.tiny_model import MEDIUM_SPEC, build_tiny_llama


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_llama()


@pytest.fixture(scope="session")
def loaded_tiny(tiny_model: Path) -> LoadedModel:
    """The tiny model loaded once; servers of the session share it (read-only)."""
    return load_model(make_settings(tiny_model))


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on the 21M-parameter bench model: slow enough on CPU that a long generation
    is still running when a test looks at it (about 100 times slower per token than tiny)."""
    running = start_server(make_settings(build_tiny_llama(MEDIUM_SPEC)))
    running.wait_ready()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(tiny_model: Path, loaded_tiny: LoadedModel) -> Iterator[RunningServer]:
    running = start_server(make_settings(tiny_model), loaded_tiny)
    running.wait_ready()
    yield running
    running.stop()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client
