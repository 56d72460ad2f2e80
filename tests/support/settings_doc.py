"""The README's settings tables, generated from the settings declarations (api.settings_spec).

    python -m tests.support.settings_doc           # print the tables
    python -m tests.support.settings_doc --write   # rewrite them in README.md (between markers)
    python -m tests.support.settings_doc --check   # exit 1 when README.md is out of date

Each table sits in README.md between ``<!-- settings: NAME -->`` and ``<!-- /settings -->``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from api.settings_spec import markdown_table
from reconciler.local.settings import LocalSettings
from reconciler.settings import ENV_PREFIX as RECONCILER_PREFIX
from reconciler.settings import Settings as ReconcilerSettings
from runtime.server.settings import Settings as ServerSettings
from runtime.vllm.settings import LauncherFlags
from webhook.settings import ENV_PREFIX as WEBHOOK_PREFIX
from webhook.settings import Settings as WebhookSettings

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(
    r"(<!-- settings: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /settings -->)", re.S
)


def tables() -> dict[str, str]:
    """Process name → its markdown table (the webhook's includes the nested KAITO_CERTS_*)."""
    return {
        "webhook": markdown_table(WebhookSettings, WEBHOOK_PREFIX),
        "reconciler": markdown_table(ReconcilerSettings, RECONCILER_PREFIX),
        "runtime.server": markdown_table(ServerSettings),
        "reconciler.local": markdown_table(LocalSettings),
        "runtime.vllm": markdown_table(LauncherFlags),
    }


def render(text: str) -> str:
    """``text`` with every marked table replaced by its generated one."""
    wanted = tables()
    found = set()

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in wanted:
            raise SystemExit(f"README.md names an unknown settings table {name!r}")
        found.add(name)
        return m.group(1) + wanted[name] + m.group(4)

    out = _BLOCK.sub(replace, text)
    missing = set(wanted) - found
    if missing:
        raise SystemExit(f"README.md has no table for {', '.join(sorted(missing))}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md is stale")
    args = p.parse_args(argv)
    if not (args.write or args.check):
        for name, table in tables().items():
            print(f"<!-- settings: {name} -->\n{table}<!-- /settings -->\n")
        return 0
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.write:
        README.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        print("README.md settings tables are stale: run `make settings-doc`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
