"""Every process refuses a bad setting the same way: exit 2 before any I/O, one message naming the
flag and the variable, the value and the fix. "Before any I/O" is checked for real: the kubeconfig
points at a listening socket of this test, which must see no connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import settings_doc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket that would accept the process's API connection (none must come)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def kubeconfig(tmp_path: Path, listener: socket.socket) -> Path:
    port = listener.getsockname()[1]
    path = tmp_path / "kubeconfig"
    cluster = {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run(module: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_")}
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=ROOT,
        env={**clean, **env},
    )


def assert_no_connection(listener: socket.socket) -> None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail("the process connected to the API server before refusing its settings")


CASES = [
    # (module, argv, env, message)
    (
        "webhook",
        ["--port", "70000"],
        {},
        "--port / KAITO_WEBHOOK_PORT='70000': above the maximum 65535; use a value from 1 to 65535",
    ),
    (
        "webhook",
        [],
        {"KAITO_WEBHOOK_BODY_TIMEOUT_SECONDS": "soon"},
        "--body-timeout-seconds / KAITO_WEBHOOK_BODY_TIMEOUT_SECONDS='soon': not a number; use a "
        "value from 0.1 to 600",
    ),
    (
        "webhook",
        [],
        {"KAITO_CERTS_CA_OVERLAP": "30d"},
        "KAITO_CERTS_CA_OVERLAP='30d': above the maximum 7d; use a value from 1s to 7d",
    ),
    (
        "reconciler",
        ["--workers", "many"],
        {},
        "--workers / KAITO_RECONCILER_WORKERS='many': not a whole number; use a value from 1 to 64",
    ),
    (
        "reconciler",
        [],
        {"KAITO_RECONCILER_LEADER_ELECT": "perhaps"},
        "--leader-elect / KAITO_RECONCILER_LEADER_ELECT='perhaps': not a boolean; use true or "
        "false",
    ),
]


@pytest.mark.parametrize(
    ("module", "argv", "env", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_a_bad_setting_exits_2_before_any_io(
    module: str,
    argv: list[str],
    env: dict[str, str],
    message: str,
    *,
    kubeconfig: Path,
    listener: socket.socket,
) -> None:
    result = run(module, ["--kubeconfig", str(kubeconfig), *argv], env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_connection(listener)


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (
            "runtime.server",
            ["--model", "/nonexistent/model", "--max-queued-requests", "-1"],
            "--max-queued-requests='-1': below the minimum 0; use a value from 0 to 1000000",
        ),
        (
            "runtime.vllm",
            ["--preset-file", "/nonexistent/preset.json", "--ray-port", "0"],
            "--ray-port='0': below the minimum 1; use a value from 1 to 65535",
        ),
        (
            "reconciler.local",
            ["run", "/nonexistent/workspace.yaml", "--ready-timeout-s", "0"],
            "--ready-timeout-s='0': below the minimum 1; use a value from 1 to 86400",
        ),
    ],
)
def test_a_bad_flag_of_a_flags_only_process_exits_2(
    module: str, argv: list[str], message: str
) -> None:
    """The model folder and the Workspace file do not exist: they would be refused with another
    message (and exit 3 for the model) had the process got that far."""
    result = run(module, argv, {})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_readme_settings_tables_are_generated_from_the_declarations() -> None:
    text = settings_doc.README.read_text(encoding="utf-8")
    assert settings_doc.render(text) == text, "run `make settings-doc` and commit README.md"
    for name, table in settings_doc.tables().items():
        assert f"<!-- settings: {name} -->\n{table}<!-- /settings -->" in text


def test_a_stale_readme_table_is_found() -> None:
    """The check can fail: a README whose webhook table lost a row is re-rendered differently."""
    text = settings_doc.README.read_text(encoding="utf-8")
    stale = text.replace(
        "| `--port` / `KAITO_WEBHOOK_PORT` | `9443` | 1..65535 | HTTPS port. |\n", ""
    )
    assert stale != text
    assert settings_doc.render(stale) == text
