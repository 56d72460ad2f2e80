"""``python -m runtime.vllm``: see ``runtime.vllm.cli``."""

from runtime.vllm.cli import main

raise SystemExit(main())
