"""``python -m reconciler``: run the reconciler (``--help`` lists every setting)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from reconciler.app import serve
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_sources(sys.argv[1:] if argv is None else argv, os.environ)
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings, os.environ))
    except ReconcilerError as exc:
        logging.getLogger("reconciler").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
