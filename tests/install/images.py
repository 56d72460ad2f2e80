"""Static facts about the container build files (there is no container engine here).

* ``parse_dockerfile(path)`` → ``Dockerfile``: the base image (ARG defaults substituted), the
  ``COPY`` sources and destinations, the ``RUN`` lines.
* ``requirement_pins(path)`` → ``{name: version}`` of a pip requirements file (normalized names),
  and whether every pin carries a hash.
* ``third_party_imports(paths)`` → top-level modules imported by the Python files under
  ``paths`` (``TYPE_CHECKING`` blocks and relative imports excluded); ``ours=True``: the
  project's own packages they import.
* ``modules_of(distributions)`` → the top-level modules those installed distributions provide;
  ``closure(distribution)`` → a distribution and everything it requires (installed metadata).
* ``guarded_run(module, args, allowed)`` runs ``python -m module args`` in a subprocess where
  importing any top-level module outside ``allowed`` (and the standard library) fails, i.e. the
  image's environment as far as imports go.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.install.manifests import ROOT

PROJECT_PACKAGES = frozenset({"api", "webhook", "reconciler", "runtime", "certs", "tests"})


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None = None


@dataclass
class Dockerfile:
    path: Path
    base_image: str
    args: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    user: str | None = None
    entrypoint: str | None = None

    def copied_sources(self) -> list[str]:
        return [s for c in self.copies if c.from_stage is None for s in c.sources]


def _logical_lines(text: str) -> list[str]:
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append((current + line).strip())
        current = ""
    if current:
        out.append(current.strip())
    return out


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text
    )


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    base = ""
    copies: list[Copy] = []
    runs: list[str] = []
    user = entrypoint = None
    for line in _logical_lines(path.read_text()):
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif instr == "FROM":
            base = _substitute(rest.split()[0], args)
        elif instr in ("COPY", "ADD"):
            parts = rest.split()
            flags = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            copies.append(Copy(paths[:-1], paths[-1], stage))
        elif instr == "RUN":
            runs.append(rest)
        elif instr == "USER":
            user = rest.strip()
        elif instr == "ENTRYPOINT":
            entrypoint = rest.strip()
    return Dockerfile(path, base, args, copies, runs, user, entrypoint)


def requirement_pins(path: Path) -> tuple[dict[str, str], bool]:
    """``({name: version}, every pin has a hash)`` of a ``uv pip compile`` output."""
    pins: dict[str, str] = {}
    hashed = True
    for line in _logical_lines(path.read_text()):
        if line.startswith("-"):
            continue
        spec = line.split(" ", 1)[0]
        name, sep, version = spec.partition("==")
        assert sep, f"{path.name}: {spec!r} is not pinned with =="
        pins[normalize(name)] = version
        hashed = hashed and "--hash=sha256:" in line
    return pins, hashed


def lock_pins(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, version = line.split(" ", 1)[0].partition("==")
            pins[normalize(name)] = version
    return pins


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def _imports(paths: Iterable[Path]) -> Iterator[tuple[Path, ast.Import | ast.ImportFrom]]:
    """Every absolute import statement of the ``.py`` files at ``paths`` (files or folders),
    outside ``if TYPE_CHECKING:`` blocks."""
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for file in files:
            if file.suffix != ".py":
                continue
            tree = ast.parse(file.read_text(), str(file))
            skip = _type_checking_nodes(tree)
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.Import) or (
                    isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                ):
                    yield file, node


def third_party_imports(paths: Iterable[Path], *, ours: bool = False) -> dict[str, set[str]]:
    """``{top-level module: {files importing it}}``, without the stdlib and our packages (with
    ``ours``: only our packages)."""
    found: dict[str, set[str]] = {}
    for file, node in _imports(paths):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [str(node.module)]
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or (top in PROJECT_PACKAGES) != ours:
                continue
            found.setdefault(top, set()).add(str(file.relative_to(ROOT)))
    return found


def module_files(module: str) -> list[str]:
    """The repository paths that can hold ``module`` (``a/b.py`` or ``a/b/__init__.py``)."""
    base = module.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"]


def is_copied(path: str, copied_sources: Iterable[str]) -> bool:
    """True when a COPY source is ``path`` itself or a folder above it."""
    return any(
        path == s or (s.endswith("/") and path.startswith(s)) or path.startswith(s + "/")
        for s in copied_sources
    )


def uncopied_modules(paths: Iterable[Path], copied_sources: Sequence[str]) -> dict[str, set[str]]:
    """``{module: {files importing it}}`` for our modules (``PROJECT_PACKAGES``) that the copied
    code imports but the image does not copy: ``python -m`` would fail in the image with
    ``ModuleNotFoundError`` (a top-level check alone misses a missing ``runtime/server``)."""
    found: dict[str, set[str]] = {}
    for file, node in _imports(paths):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            # `from pkg import sub`: sub may be a module of its own.
            modules = [str(node.module)] + [
                f"{node.module}.{a.name}"
                for a in node.names
                if any((ROOT / f).is_file() for f in module_files(f"{node.module}.{a.name}"))
            ]
        for module in modules:
            if module.split(".")[0] not in PROJECT_PACKAGES:
                continue
            candidates = [f for f in module_files(module) if (ROOT / f).is_file()]
            if candidates and not any(is_copied(f, copied_sources) for f in candidates):
                found.setdefault(module, set()).add(str(file.relative_to(ROOT)))
    return found


def modules_of(distributions: Iterable[str]) -> set[str]:
    """Top-level import names provided by these installed distributions."""
    wanted = {normalize(d) for d in distributions}
    out: set[str] = set()
    for module, dists in metadata.packages_distributions().items():
        if any(normalize(d) in wanted for d in dists):
            out.add(module)
    return out


def closure(distribution: str, extras: Iterable[str] = ()) -> set[str]:
    """The distribution and, recursively, every requirement that applies here (installed)."""
    env = {k: str(v) for k, v in default_environment().items()}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(distribution, tuple(extras))]
    while todo:
        name, dist_extras = todo.pop()
        key = normalize(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (*dist_extras, "")
            ):
                continue
            todo.append((req.name, tuple(req.extras)))
    return seen


_GUARD = """
import importlib.abc, sys
ALLOWED = set(sys.argv[1].split(","))
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_sysconfigdata"):
            return None
        raise ModuleNotFoundError(f"{name!r} is not in the image", name=name)
sys.meta_path.insert(0, Guard())
import importlib.util
_find_spec = importlib.util.find_spec
def find_spec(name, package=None):  # a library's probe for an optional package
    try:
        return _find_spec(name, package)
    except ModuleNotFoundError as exc:  # (yarl's for pydantic_core): the image says None
        if sys._getframe(1).f_globals.get("__name__") != "runpy":
            if str(exc).endswith("is not in the image"):
                return None
        raise
importlib.util.find_spec = find_spec
import runpy
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def guarded_run(
    module: str, args: list[str], allowed: Iterable[str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _GUARD, ",".join(sorted(allowed)), module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
