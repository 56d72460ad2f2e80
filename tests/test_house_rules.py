"""House rules a tool can check and ruff cannot: the length of a module.

House rule 10 keeps modules small with one job each. A module of the product packages longer
than ``MAX_LINES`` must be listed, with why, in the README's development section (under
"Modules over 500 lines"); a listed module that is short again must leave the list.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "webhook", "reconciler", "runtime", "certs")
MAX_LINES = 500
HEADING = "### Modules over 500 lines"
ENTRY = re.compile(r"^- `(?P<path>[\w/.]+\.py)`: (?P<why>\S.*)$")


def long_modules() -> dict[str, int]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                out[path.relative_to(ROOT).as_posix()] = lines
    return out


def listed() -> dict[str, str]:
    """The README's list: module path → why it is long."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    out = {}
    for line in section.splitlines():
        match = ENTRY.match(line)
        if match:
            out[match["path"]] = match["why"]
    return out


def test_every_long_module_says_why_in_the_readme() -> None:
    reasons = listed()
    unlisted = {p: n for p, n in long_modules().items() if p not in reasons}
    assert not unlisted, (
        f"modules over {MAX_LINES} lines: {unlisted}; split them, or list each in README.md "
        f"under {HEADING!r} as a line '- `path`: why'"
    )


def test_the_list_names_only_long_modules() -> None:
    stale = sorted(set(listed()) - set(long_modules()))
    assert not stale, f"listed in README.md but no longer over {MAX_LINES} lines: {stale}"


def test_the_counter_sees_every_package() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert ENTRY.match("- `api/x.py`: why")
    assert not ENTRY.match("- `api/x.py`:")
