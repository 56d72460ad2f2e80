"""A do-nothing admission webhook (allows everything, no patch) over the same aiohttp + TLS
stack, for ``bench/webhook_bench.py``: what any Python webhook costs on this machine, so the cost
of kaito's own decisions can be told apart.

    python bench/webhook_null.py PORT CERT KEY
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiohttp import web


async def allow(request: web.Request) -> web.Response:
    review = json.loads(await request.read())
    uid = review["request"]["uid"]
    return web.json_response(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
    )


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from webhook.tls import server_context

    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    app = web.Application()
    app.router.add_post("/mutate", allow)
    app.router.add_post("/validate", allow)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        ssl_context=server_context(Path(cert), Path(key)),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
