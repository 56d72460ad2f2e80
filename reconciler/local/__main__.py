"""``python -m reconciler.local``: see ``reconciler.local.cli``."""

from __future__ import annotations

import sys

from reconciler.local.cli import main

if __name__ == "__main__":
    sys.exit(main())
