"""Admin defaults in force, and their reload without a restart.

``ConfigState.apply(version, data)`` parses a new ConfigMap version; a malformed one keeps the
last good settings (logged once per bad version and counted in ``kaito_webhook_config_*``).
``poll(state, source, interval)`` re-reads the source forever; sources are the ConfigMap through
the API (``ApiConfigSource``) or a mounted ConfigMap directory (``DirConfigSource``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from api.config import DEFAULT_CONFIG, AdminConfig, parse_config
from api.errors import ConfigError
from api.presets import PresetCatalog
from api.skus import SkuCatalog
from api.validation import ValidationContext
from webhook.errors import KubeError
from webhook.kube import Kube
from webhook.metrics import Metrics

log = logging.getLogger("kaito.webhook.config")

MISSING = "<missing>"


class ConfigState:
    """The settings in force and the validation context built from them."""

    def __init__(self, presets: PresetCatalog, skus: SkuCatalog, metrics: Metrics) -> None:
        self.presets = presets
        self.base_skus = skus
        self.metrics = metrics
        self.config: AdminConfig = DEFAULT_CONFIG
        self.context = ValidationContext(presets=presets, skus=skus, config=DEFAULT_CONFIG)
        self.version: str | None = None
        self.bad_version: str | None = None
        self.last_error: str | None = None
        self.generation = 0
        self.loaded = False

    def apply(self, version: str, data: Mapping[str, object] | None) -> bool:
        """Use ``data`` as the new settings unless it is malformed; True when in force."""
        if version == self.version:
            self.loaded = True
            return True
        if version == self.bad_version:
            return False
        try:
            config = parse_config(data, presets=self.presets, skus=self.base_skus)
        except ConfigError as exc:
            self.bad_version = version
            self.last_error = str(exc)
            self.loaded = True
            self.metrics.config_reloads.labels("error").inc()
            self.metrics.config_ok.set(0)
            log.error(
                "keeping the last good admin defaults (generation %d): %s", self.generation, exc
            )
            return False
        self.config = config
        self.context = replace(self.context, skus=config.sku_catalog(self.base_skus), config=config)
        self.version, self.bad_version, self.last_error = version, None, None
        self.generation += 1
        self.loaded = True
        self.metrics.config_reloads.labels("missing" if version == MISSING else "ok").inc()
        self.metrics.config_ok.set(1)
        self.metrics.config_generation.set(self.generation)
        log.info("admin defaults generation %d in force (version %s)", self.generation, version)
        return True


class ConfigSource(Protocol):
    async def read(self) -> tuple[str, Mapping[str, object]] | None:
        """``(version, data)``, or None when the ConfigMap does not exist."""


class ApiConfigSource:
    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    async def read(self) -> tuple[str, Mapping[str, object]] | None:
        return await self.kube.get_configmap(self.namespace, self.name)


class DirConfigSource:
    """A ConfigMap mounted as a volume: one file per key (dot-files are the kubelet's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _read(self) -> tuple[str, dict[str, object]] | None:
        if not self.directory.is_dir():
            return None
        data: dict[str, object] = {}
        digest = hashlib.sha256()
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            data[path.name] = text
            digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        return digest.hexdigest()[:16], data

    async def read(self) -> tuple[str, Mapping[str, object]] | None:
        return await asyncio.to_thread(self._read)


async def reload_once(state: ConfigState, source: ConfigSource) -> None:
    try:
        got = await source.read()
    except (KubeError, OSError, UnicodeDecodeError) as exc:
        state.metrics.config_reloads.labels("unreachable").inc()
        log.warning("cannot read the admin defaults, keeping the settings in force: %s", exc)
        return
    if got is None:
        state.apply(MISSING, {})
    else:
        state.apply(*got)


async def poll(state: ConfigState, source: ConfigSource, interval: float) -> None:
    """Re-read the source every ``interval`` seconds, forever (cancel to stop)."""
    while True:
        await reload_once(state, source)
        await asyncio.sleep(interval)
