"""A second mutating webhook for the e2e reinvocation test: adds a container to every Pod it is sent.

It stands in for a service-mesh sidecar injector: a real, independent webhook process on a real TLS
socket, so that the API server's reinvocation of token-projector is exercised for real.
Usage: sidecar_injector.py PORT CERT_FILE KEY_FILE
"""

import base64
import json
import ssl
import sys

from aiohttp import web


async def inject(request: web.Request) -> web.Response:
    review = await request.json()
    ops = [{"op": "add", "path": "/spec/containers/-", "value": {"name": "injected-sidecar", "image": "proxy:1"}}]
    response = {
        "uid": review["request"]["uid"],
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    return web.json_response({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response})


def main() -> None:
    port, cert_file, key_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    app = web.Application()
    app.router.add_post("/inject", inject)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
