"""The ceiling: a bare aiohttp TLS server that decodes the body and returns a fixed AdmissionReview.

Same aiohttp, same TLS context (webhook.tls), same JSON library (orjson) and event loop as
token-projector, and the same ``gc.freeze()`` after start-up (without it, the ceiling's full garbage
collections make it some 10% slower on the large Pod, which would flatter token-projector's ratio):
whatever it costs is the server stack's cost, and token-projector cannot beat it.
Usage: python bench/ceiling.py PORT CERT_FILE KEY_FILE
"""

import gc
import sys

import orjson
from aiohttp import web

from webhook.server.tls import load_context

FIXED = orjson.dumps(
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "fixed", "allowed": True}}
)


async def handle(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    return web.Response(body=FIXED, content_type="application/json")


async def freeze(app: web.Application) -> None:
    gc.collect()
    gc.freeze()


def main() -> None:
    port, cert_file, key_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context, _ = load_context(cert_file, key_file)
    app = web.Application(client_max_size=6 * 1024 * 1024)
    app.router.add_post("/mutate", handle)
    app.on_startup.append(freeze)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    main()
