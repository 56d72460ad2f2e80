"""The images built for real (buildah, ``tests/images``) and checked by running them: the
controller and transformers images from ``manifests/images`` unchanged, an adapter image whose
``/data`` the reconciler's init container copies, and a private preset image that the
reconciler's command serves offline from ``/workspace/weights``.

Cold, the builds take minutes (the transformers image installs PyPI's torch with its CUDA
wheels); the archives are cached by a hash of their inputs, so later runs start at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import DEFAULT_CONFIG
from api.defaults import default
from api.workspace import Workspace
from reconciler.commands import OFFLINE_ENV, PRIVATE_WEIGHTS_DIR, ServeArgs, transformers_command
from reconciler.workload import adapter_init_containers
from tests.images import BuiltImage, ensure_adapter_image, ensure_image, ensure_model_image
from tests.images.build import Container, container
from tests.install.images import lock_pins, normalize
from tests.runtime.harness import make_settings, start_server
from tests.support.procs import free_port
from tests.support.tiny_model import build_tiny_llama

pytestmark = [pytest.mark.images, pytest.mark.slow]


@pytest.fixture(scope="module")
def controller() -> Iterator[Container]:
    with container(ensure_image("controller")) as c:
        yield c


@pytest.fixture(scope="module")
def model_image() -> BuiltImage:
    return ensure_model_image()


@pytest.fixture(scope="module")
def model(model_image: BuiltImage) -> Iterator[Container]:
    with container(model_image) as c:
        yield c


def test_refs_are_pinned_names_and_archives_are_oci() -> None:
    image = ensure_image("controller")
    assert image.ref.startswith("localhost/kaito-py/controller:")
    assert not image.ref.endswith(":latest")
    again = ensure_image("controller")
    assert again.reused
    assert again.archive == image.archive
    import tarfile

    with tarfile.open(image.archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
    assert layout["imageLayoutVersion"] == "1.0.0"
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == [image.ref]


CONTAINERD_CONFIG = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


@pytest.fixture
def private_containerd() -> Iterator[Path]:
    """A containerd of our own (its own root, state and socket; no CRI), stopped and removed
    afterwards: the real node's containerd is not touched. Yields its socket."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd and ctr are not installed (Debian package containerd)")
    work = Path(tempfile.mkdtemp(prefix="kaito-ctd-"))
    (work / "config.toml").write_text(CONTAINERD_CONFIG.format(dir=work))
    sock = work / "containerd.sock"
    with (work / "log").open("w") as log:
        process = subprocess.Popen(
            ["containerd", "--config", str(work / "config.toml")], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None, (work / "log").read_text()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)
        yield sock
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def test_the_archives_import_into_containerd_under_their_ref(private_containerd: Path) -> None:
    image = ensure_image("controller")
    ctr = ["ctr", "--address", str(private_containerd), "-n", "k8s.io", "images"]
    done = subprocess.run(
        [*ctr, "import", str(image.archive)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([*ctr, "ls", "-q"], capture_output=True, text=True, check=True)
    assert listed.stdout.split() == [image.ref]


def test_the_controller_image_runs_both_commands_without_the_ml_stack(
    controller: Container,
) -> None:
    for module in ("webhook", "reconciler"):
        done = controller.run(["python", "-m", module, "--help"])
        assert done.returncode == 0, done.stderr
        assert f"python -m {module}" in done.stdout
    done = controller.run(["id", "-u"])
    assert done.stdout.strip() == "65532"
    probe = "import importlib.util as u; print([m for m in ('torch', 'vllm') if u.find_spec(m)])"
    assert controller.run(["python", "-c", probe]).stdout.strip() == "[]"


def test_the_transformers_image_has_the_locked_ml_stack(model: Container) -> None:
    """The model image is FROM the transformers image: its packages are the runtime's."""
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d: m.version(d) for d in ('torch', 'transformers', 'peft')}))"
    )
    done = model.run(["python", "-c", code])
    assert done.returncode == 0, done.stderr
    lock = lock_pins()
    for dist, version in json.loads(done.stdout).items():
        assert lock[normalize(dist)] == version, dist
    assert model.run(["id", "-u"]).stdout.strip() == "1000"


def _workspace_with_adapter(image: str) -> Workspace:
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "uid": "u", "generation": 1},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {}}},
        "inference": {
            "preset": {"name": "falcon-7b"},
            "adapters": [{"source": {"name": "tiny-adapter", "image": image}, "strength": "0.5"}],
        },
    }
    return Workspace.from_dict(default(obj, DEFAULT_CONFIG))


def test_the_adapter_image_holds_peft_files_the_init_container_copies() -> None:
    image = ensure_adapter_image()
    init = adapter_init_containers(_workspace_with_adapter(image.ref))[0]
    assert init["image"] == image.ref
    with container(image) as c:
        done = c.run(
            [*init["command"][:2], init["command"][2] + " && ls /mnt/adapter/tiny-adapter"]
        )
        assert done.returncode == 0, done.stderr
        assert set(done.stdout.split()) >= {"adapter_config.json", "adapter_model.safetensors"}
        config = json.loads(c.run(["cat", "/mnt/adapter/tiny-adapter/adapter_config.json"]).stdout)
    assert config["peft_type"] == "LORA"


def _private_command(port: int) -> list[str]:
    """The reconciler's command for a private preset image (the tiny model's name, a free
    port: the container shares the host's network)."""
    args = ServeArgs(
        preset="tiny-private",
        model="example/never-downloaded",
        revision="main",
        download=False,
        model_dir=PRIVATE_WEIGHTS_DIR,
        port=port,
    )
    return transformers_command(args)


def test_the_private_preset_image_serves_its_weights_offline(model: Container) -> None:
    listing = model.run(["ls", PRIVATE_WEIGHTS_DIR]).stdout.split()
    assert "config.json" in listing
    assert any(f.endswith(".safetensors") for f in listing)
    port = free_port()
    # No route to the Hub from the container's point of view: a bogus proxy for every scheme.
    env = {**OFFLINE_ENV, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    process = model.popen(_private_command(port), env=env)
    body = {"model": "tiny-private", "prompt": "The Workspace", "max_tokens": 12, "temperature": 0}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the image's server did not become ready"
                time.sleep(1)
            chat = client.post("/chat", json={"prompt": "YOUR_PROMPT_HERE"})
            assert chat.status_code == 200, chat.text
            assert chat.json()["Result"].startswith("YOUR_PROMPT_HERE")
            in_image = client.post("/v1/completions", json=body)
            assert in_image.status_code == 200, in_image.text
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    # The same weights served from the host's copy of the tiny model give the same greedy text.
    local = start_server(make_settings(build_tiny_llama(), served_model_name="tiny-private"))
    try:
        local.wait_ready()
        with httpx.Client(base_url=local.url, timeout=60) as client:
            on_host = client.post("/v1/completions", json=body)
    finally:
        local.stop()
    assert in_image.json()["choices"][0]["text"] == on_host.json()["choices"][0]["text"]


def test_a_runtime_image_without_weights_refuses_to_start(model: Container) -> None:
    """Same check as in a Pod whose private image lacks its weights: exit 3, and the message
    in the termination log (here a file the test reads back)."""
    command = _private_command(free_port())
    command[command.index(PRIVATE_WEIGHTS_DIR)] = "/workspace/no-weights-here"
    done = model.run([*command, "--termination-log", "/tmp/termination-log"], env=OFFLINE_ENV)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "--model /workspace/no-weights-here: no such folder" in done.stderr
    assert "/workspace/weights" in done.stderr
    log = model.run(["cat", "/tmp/termination-log"]).stdout
    assert "no such folder" in log
