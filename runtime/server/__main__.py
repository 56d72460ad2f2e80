"""``python -m runtime.server``: run the transformers inference server.

Exit status: 0 after SIGTERM/SIGINT, 1 when the model or an adapter fails to load (so that the
Pod restarts and its log shows why), 2 for a bad command line, 3 when a start-up check refuses
(``--model`` is an absolute path that is not a model folder: a private preset image without
its weights); the refusal is also written to ``--termination-log``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from runtime.server.errors import SettingsError
from runtime.server.openapi import build_openapi, server_limits
from runtime.server.prestart import EXIT_PRESTART, model_folder_problem, report
from runtime.server.settings import Settings, parse_settings

log = logging.getLogger("runtime.server")


async def serve(settings: Settings) -> int:
    """Serve until a signal arrives; 1 if the model fails to load."""
    from runtime.server.app import STATE, create_app  # noqa: PLC0415 (torch: not for --help)

    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening on http://%s:%d (health: /health)", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = app[STATE]
    settled = asyncio.create_task(state.settled.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({settled, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if state.status == "failed":
        log.error("exiting: %s", state.error)
        code = 1
    else:
        await stopping
        log.info("shutting down")
    settled.cancel()
    stopping.cancel()
    await runner.cleanup()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, namespace = parse_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if namespace.print_openapi:
        print(json.dumps(build_openapi(server_limits(settings)), indent=2))
        return 0
    problem = model_folder_problem(settings.model)
    if problem is not None:
        report(problem, settings.termination_log)
        return EXIT_PRESTART
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
