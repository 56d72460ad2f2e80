"""Build OCI images with buildah into a cache keyed by a hash of their inputs.

* ``ensure_base()``: the TEST base image (``base.Containerfile``): an mmdebstrap bookworm
  minbase with Python 3.11 and a venv at ``/usr/local``, trusting the host's CA bundle.
* ``ensure_image(name)``: ``manifests/images/<name>.Dockerfile`` built unchanged, with the base
  passed through its ``PYTHON_IMAGE`` build argument.
* ``ensure_model_image(...)`` / ``ensure_adapter_image(...)``: a private preset image (weights at
  ``/workspace/weights``, FROM the runtime image) and an adapter image (PEFT files under
  ``/data``): what ``model.Containerfile`` / ``adapter.Containerfile`` build; the model image
  by appending that Containerfile's one layer to the runtime's archive (``ociappend``), not by
  buildah, which would recompress the runtime's gigabytes of layers.

Each result is an OCI archive ``<cache>/<name>-<key>.oci.tar`` (what ``ctr -n k8s.io images
import`` takes) whose image is named ``localhost/kaito-py/<name>:<key>`` (never ``latest``, so
``imagePullPolicy: IfNotPresent`` applies). ``key`` hashes every input: the Dockerfile, its
ignore file, every file it copies, the build arguments and the base image's key. A second call
finds the archive and returns at once. buildah runs on a storage of its own under the cache
(overlay, else vfs), removed after each build; a file lock serialises builds between processes.

The cache is ``$KAITO_TEST_IMAGE_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/kaito-py/images``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.images import prereqs
from tests.images.errors import BuildError, ImageError
from tests.install.images import parse_dockerfile
from tests.install.manifests import IMAGES, ROOT

HERE = Path(__file__).resolve().parent
# Bump when the way images are built changes without any input file changing.
BUILDER_VERSION = "1"
REPOSITORY = "localhost/kaito-py"
DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Dockerfiles under manifests/images whose base is the Python image (PYTHON_IMAGE); the others
# (vllm.Dockerfile: FROM vLLM's registry image) cannot be built without a registry.
PYTHON_BASED = ("controller", "transformers", "vllm-cpu")
RUNTIME_USER = "1000:1000"
WEIGHTS_DIR = "/workspace/weights"


@dataclass(frozen=True)
class BuiltImage:
    """An image in the cache: ``ref`` is the name Pods use, ``archive`` the OCI archive."""

    name: str
    ref: str
    archive: Path
    key: str
    size_bytes: int
    build_seconds: float
    """How long the build that made the archive took (0 for none recorded)."""
    reused: bool
    """True when this call found the archive in the cache."""


def cache_dir() -> Path:
    env = os.environ.get("KAITO_TEST_IMAGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-py" / "images"


def say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Pure parts: keys, the failing step, the CA bundle pip uses


def hash_inputs(parts: Iterable[tuple[str, bytes]]) -> str:
    """A 16-hex-digit key over named byte strings (order-independent in the names)."""
    digest = hashlib.sha256()
    for label, data in sorted(parts):
        digest.update(label.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def tree_files(path: Path) -> Iterator[Path]:
    """``path`` itself, or every file under it, without byte-compiled caches."""
    if path.is_file():
        yield path
        return
    for file in sorted(path.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
            yield file


def file_parts(root: Path, sources: Iterable[str]) -> list[tuple[str, bytes]]:
    parts = []
    for source in sources:
        path = root / source
        if not path.exists():
            raise ImageError(f"{source}: copied by the Dockerfile but missing under {root}")
        parts += [(str(f.relative_to(root)), f.read_bytes()) for f in tree_files(path)]
    return parts


STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")


def failing_step(output: str) -> str | None:
    """The last ``STEP n/m: INSTRUCTION`` buildah printed (the one that failed), shortened."""
    last = None
    for line in output.splitlines():
        match = STEP.match(line.strip())
        if match:
            n, m, instr = match.groups()
            instr = re.sub(r"\s+", " ", instr)
            last = f"STEP {n}/{m}: {instr[:200]}{'...' if len(instr) > 200 else ''}"
    return last


def pip_cert_from_config(config_list: str) -> str | None:
    """The ``cert`` value in ``pip config list`` output (last one wins, as in pip)."""
    found = None
    for line in config_list.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().split(".")[-1] == "cert":
            found = value.strip().strip("'\"")
    return found


def host_ca_bundle() -> Path:
    """The CA bundle pip trusts on this host: ``pip config list``'s cert, else the system one."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    for candidate in (
        pip_cert_from_config(done.stdout),
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ImageError(
        "no CA bundle found for the test base image (pip config's cert, PIP_CERT, SSL_CERT_FILE "
        "or /etc/ssl/certs/ca-certificates.crt): install the ca-certificates package"
    )


# ---------------------------------------------------------------------------------------------
# buildah


class Buildah:
    """buildah on a private storage (``root``), removed by ``close``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.driver = "overlay"

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.workdir / "storage"),
            "--runroot",
            str(self.workdir / "run"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if check and done.returncode != 0:
            raise ImageError(
                f"`buildah {' '.join(args)}` failed (exit {done.returncode}): "
                + (done.stderr or done.stdout).strip()[-2000:]
            )
        return done

    def pick_driver(self) -> None:
        """overlay when it mounts here, else vfs (copies every layer: slower, more disk)."""
        probe = self.run("from", "--name", "kaito-probe", "scratch", check=False)
        ok = probe.returncode == 0 and self.run("mount", "kaito-probe", check=False).returncode == 0
        self.run("rm", "--all", check=False)
        if not ok:
            shutil.rmtree(self.workdir / "storage", ignore_errors=True)
            self.driver = "vfs"
            say("overlay storage does not work here; using vfs")

    def bud(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        ignorefile: Path | None,
    ) -> None:
        args = ["bud", "--isolation", "chroot", "-t", tag, "-f", str(dockerfile)]
        for k, v in build_args.items():
            args += ["--build-arg", f"{k}={v}"]
        if ignorefile is not None:
            args += ["--ignorefile", str(ignorefile)]
        log = self.workdir / "build.log"
        with log.open("w") as out:
            done = subprocess.run(
                [*self.argv(*args), str(context)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=context,
                check=False,
            )
        if done.returncode != 0:
            text = log.read_text(errors="replace")
            step = failing_step(text) or "before the first step"
            tail = "\n".join(text.strip().splitlines()[-25:])
            raise BuildError(
                f"building {display(dockerfile)} failed at {step} "
                f"(buildah exit {done.returncode}); last lines:\n{tail}"
            )

    def push(self, tag: str, archive: Path) -> None:
        self.run("push", "--quiet", tag, f"oci-archive:{archive}:{tag}")

    def close(self) -> None:
        self.run("rm", "--all", check=False)
        self.run("rmi", "--all", "--force", check=False)
        # Leftover overlay mounts would make rmtree fail: unmount what is under our storage.
        storage = str(self.workdir / "storage")
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for target in sorted((m.split()[1] for m in mounts), reverse=True):
            if target.startswith(storage):
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another process is building images; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached(name: str, key: str, root: Path) -> BuiltImage | None:
    archive = root / f"{name}-{key}.oci.tar"
    meta = root / f"{name}-{key}.json"
    if not (archive.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    return BuiltImage(
        name=name,
        ref=info["ref"],
        archive=archive,
        key=key,
        size_bytes=archive.stat().st_size,
        build_seconds=float(info.get("build_seconds", 0.0)),
        reused=True,
    )


def _build(
    name: str,
    key: str,
    root: Path,
    make: Callable[[Buildah, str], None] | None,
    *,
    replaces_older: bool = True,
    write: Callable[[Path, str], None] | None = None,
) -> BuiltImage:
    """Build with ``make(buildah, tag)`` unless cached; export, record, drop older versions.
    With ``write(archive, tag)`` instead, no buildah: it writes the archive itself."""
    found = _cached(name, key, root)
    if found is not None:
        return found
    with locked(root):
        found = _cached(name, key, root)
        if found is not None:
            return found
        prereqs.ensure()
        # Builds happen under the lock only: a build folder seen now is a killed run's debris.
        for stale in root.glob("build-*"):
            say(f"removing {stale.name}, left by an interrupted build")
            Buildah(stale).close()
        tag = f"{REPOSITORY}/{name}:{key}"
        say(f"building {tag} (first time for these inputs; cached afterwards)")
        started = time.monotonic()
        archive = root / f"{name}-{key}.oci.tar"
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        if write is not None:
            driver = "oci-append"
            try:
                write(partial, tag)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        else:
            assert make is not None
            buildah = Buildah(Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=root)))
            try:
                buildah.pick_driver()
                make(buildah, tag)
                buildah.push(tag, partial)
            finally:
                buildah.close()
            driver = buildah.driver
        partial.rename(archive)
        seconds = round(time.monotonic() - started, 1)
        info = {"ref": tag, "build_seconds": seconds, "driver": driver}
        (root / f"{name}-{key}.json").write_text(json.dumps(info, indent=2) + "\n")
        for old in root.glob(f"{name}-*.oci.tar") if replaces_older else ():
            if old != archive and old.name[len(name) + 1 :].count("-") == 0:
                old.unlink(missing_ok=True)
                old.with_suffix("").with_suffix(".json").unlink(missing_ok=True)
        size = archive.stat().st_size
        say(f"built {tag} in {seconds:.0f} s ({size / 1e6:.0f} MB archive, {driver})")
        return BuiltImage(name, tag, archive, key, size, seconds, reused=False)


# ---------------------------------------------------------------------------------------------
# The images


def base_key() -> str:
    containerfile = HERE / "base.Containerfile"
    return hash_inputs(
        [
            ("builder", BUILDER_VERSION.encode()),
            ("containerfile", containerfile.read_bytes()),
            ("debian", json.dumps([DEBIAN_SUITE, DEBIAN_SOURCES, DEBIAN_PACKAGES]).encode()),
            ("ca-bundle", host_ca_bundle().read_bytes()),
        ]
    )


def ensure_base(root: Path | None = None) -> BuiltImage:
    """The TEST base image standing in for ``python:3.11.14-slim-bookworm``."""
    root = root or cache_dir()

    def make(buildah: Buildah, tag: str) -> None:
        context = buildah.workdir / "context"
        context.mkdir()
        prereqs.ensure()
        say("mmdebstrap: a Debian bookworm minbase with python3 (about a minute or two)")
        done = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                "--mode=root",
                DEBIAN_SUITE,
                str(context / "rootfs.tar"),
                *DEBIAN_SOURCES,
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BuildError(f"mmdebstrap (the test base image's rootfs) failed:\n{tail}")
        shutil.copyfile(host_ca_bundle(), context / "ca-bundle.crt")
        buildah.bud(HERE / "base.Containerfile", context, tag, {}, None)

    return _build("base", base_key(), root, make)


def dockerfile_path(name: str) -> Path:
    path = IMAGES / f"{name}.Dockerfile"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".Dockerfile") for p in IMAGES.glob("*.Dockerfile"))
        raise ImageError(f"no manifests/images/{name}.Dockerfile; known images: {known}")
    return path


def buildable() -> list[str]:
    """The Dockerfiles under manifests/images this builder can make (Python-based ones)."""
    return [n for n in PYTHON_BASED if (IMAGES / f"{n}.Dockerfile").is_file()]


def image_key(name: str, base: BuiltImage) -> str:
    path = dockerfile_path(name)
    ignore = path.with_name(path.name + ".dockerignore")
    parsed = parse_dockerfile(path)
    parts = [
        ("builder", BUILDER_VERSION.encode()),
        ("dockerfile", path.read_bytes()),
        ("ignore", ignore.read_bytes() if ignore.is_file() else b""),
        ("base", base.key.encode()),
        *file_parts(ROOT, parsed.copied_sources()),
    ]
    return hash_inputs(parts)


def ensure_image(name: str, root: Path | None = None) -> BuiltImage:
    """``manifests/images/<name>.Dockerfile`` built unchanged on the test base image."""
    root = root or cache_dir()
    path = dockerfile_path(name)
    if name not in PYTHON_BASED:
        raise ImageError(
            f"manifests/images/{name}.Dockerfile does not start FROM the Python image "
            f"(PYTHON_IMAGE); without a registry only these can be built: {buildable()}"
        )
    base = ensure_base(root)
    ignore = path.with_name(path.name + ".dockerignore")

    def make(buildah: Buildah, tag: str) -> None:
        buildah.bud(
            path,
            ROOT,
            tag,
            {"PYTHON_IMAGE": f"oci-archive:{base.archive}"},
            ignore if ignore.is_file() else None,
        )

    return _build(name, image_key(name, base), root, make)


def _copy_tree(src: Path, dest: Path, names: Sequence[str] | None = None) -> None:
    dest.mkdir(parents=True)
    for file in tree_files(src):
        rel = file.relative_to(src)
        if names is not None and rel.parts[0] not in names:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest / rel)


def ensure_model_image(
    weights: Path,
    *,
    name: str = "model",
    runtime: str = "transformers",
    root: Path | None = None,
) -> BuiltImage:
    """A private preset image: ``runtime``'s image plus the Hugging Face folder ``weights`` at
    ``/workspace/weights`` (the convention of manifests/images/README.md), i.e. what
    ``model.Containerfile`` builds, written by appending its one layer to the runtime's archive
    (``ociappend``: no unpacking and recompressing the runtime's gigabytes)."""
    from tests.images import ociappend

    root = root or cache_dir()
    if not (weights / "config.json").is_file():
        raise ImageError(f"{weights}: not a Hugging Face model folder (no config.json)")
    runtime_image = ensure_image(runtime, root)
    containerfile = HERE / "model.Containerfile"
    key = hash_inputs(
        [
            ("builder", BUILDER_VERSION.encode()),
            ("method", b"oci-append-1"),
            ("containerfile", containerfile.read_bytes()),
            ("runtime", runtime_image.key.encode()),
            *[(f"weights/{k}", v) for k, v in file_parts(weights, ["."])],
        ]
    )
    uid, gid = (int(x) for x in RUNTIME_USER.split(":"))
    target = WEIGHTS_DIR.strip("/")

    def write(archive: Path, tag: str) -> None:
        files = {f"{target}/{f.relative_to(weights)}": f for f in tree_files(weights)}
        dirs = {target.split("/")[0]: (0, 0), target: (uid, gid)}
        for path in files:
            parent = path.rsplit("/", 1)[0]
            while parent != target and parent not in dirs:
                dirs[parent] = (uid, gid)
                parent = parent.rsplit("/", 1)[0]
        ociappend.append_layer(
            runtime_image.archive,
            archive,
            ref=tag,
            files=files,
            dirs=dirs,
            created_by=f"COPY --chown={RUNTIME_USER} weights/ {WEIGHTS_DIR}/",
        )

    return _build(name, key, root, None, replaces_older=False, write=write)


def ensure_adapter_image(
    adapter: Path, *, name: str = "adapter", root: Path | None = None
) -> BuiltImage:
    """An adapter image: the PEFT folder ``adapter`` under ``/data`` (the seed's rule)."""
    root = root or cache_dir()
    if not (adapter / "adapter_config.json").is_file():
        raise ImageError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    base = ensure_base(root)
    containerfile = HERE / "adapter.Containerfile"
    key = hash_inputs(
        [
            ("builder", BUILDER_VERSION.encode()),
            ("containerfile", containerfile.read_bytes()),
            ("base", base.key.encode()),
            *[(f"data/{k}", v) for k, v in file_parts(adapter, ["."])],
        ]
    )

    def make(buildah: Buildah, tag: str) -> None:
        context = buildah.workdir / "context"
        _copy_tree(adapter, context / "data")
        buildah.bud(
            containerfile, context, tag, {"BASE_IMAGE": f"oci-archive:{base.archive}"}, None
        )

    return _build(name, key, root, make, replaces_older=False)


class Container:
    """A working container of a built image (buildah, chroot isolation, the host's network)."""

    def __init__(self, buildah: Buildah, name: str) -> None:
        self.buildah = buildah
        self.name = name

    def argv(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return self.buildah.argv(
            "run", "--isolation", "chroot", "--network", "host", *envs, self.name, "--", *command
        )

    def run(
        self, command: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, env),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def popen(
        self, command: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Started in a session of its own: stop it with ``os.killpg``."""
        return subprocess.Popen(
            self.argv(command, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )


@contextmanager
def container(image: BuiltImage, root: Path | None = None) -> Iterator[Container]:
    """A container of ``image`` (from its archive) on a throw-away storage, removed on exit."""
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    buildah = Buildah(Path(tempfile.mkdtemp(prefix=f"run-{image.name}-", dir=root)))
    try:
        buildah.pick_driver()
        name = f"kaito-test-{image.name}"
        buildah.run("from", "--quiet", "--name", name, f"oci-archive:{image.archive}")
        yield Container(buildah, name)
    finally:
        buildah.close()


def describe(image: BuiltImage) -> dict[str, object]:
    out = asdict(image)
    out["archive"] = str(image.archive)
    return out


def clean(root: Path | None = None) -> None:
    """Remove the image cache (archives and any leftover build storage)."""
    root = root or cache_dir()
    if not root.exists():
        return
    for work in [*root.glob("build-*"), *root.glob("run-*")]:
        Buildah(work).close()
    shutil.rmtree(root, ignore_errors=True)
