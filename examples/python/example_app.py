"""A tiny Invoices API (WSGI, stdlib only) whose routes usher protects.

    /usr/bin/python3 example_app.py --usher 127.0.0.1:50051 --listen 127.0.0.1:8000
    curl -i -H "Authorization: Bearer $(usher mint --audience api/invoices --scope invoices.read)" \
        http://127.0.0.1:8000/invoices

A DPoP-bound token goes with a proof made for this request's method and URI:

    T=$(usher mint --audience api/invoices --scope invoices.read --dpop-key dpop.pem)
    curl -i -H "Authorization: DPoP $T" \
        -H "DPoP: $(usher proof --key dpop.pem --method GET --uri http://127.0.0.1:8000/invoices --token $T)" \
        http://127.0.0.1:8000/invoices
"""

import argparse
import json
import logging
from wsgiref.simple_server import make_server
from wsgiref.util import request_uri

from usher_auth import UsherAuth, UsherAuthError

log = logging.getLogger("example_app")

# Route -> scopes the token must grant.
ROUTES = {
    "/invoices": ("invoices.read",),
}


def make_app(auth):
    def app(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path not in ROUTES:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error":"Not Found"}']
        try:
            # The URI a DPoP proof is made for, as this server sees it (Host header and
            # wsgi.url_scheme); behind a proxy, rebuild the one the caller used instead.
            claims = auth.check(environ.get("HTTP_AUTHORIZATION"), required_scopes=ROUTES[path],
                                dpop=environ.get("HTTP_DPOP"), method=environ.get("REQUEST_METHOD"),
                                uri=request_uri(environ, include_query=False))
        except UsherAuthError as e:
            log.info("%s %s -> %d %s: %s", environ.get("REQUEST_METHOD"), path, e.status, e.reason, e.message)
            start_response(e.status_line, e.headers)
            return [e.body()]
        body = json.dumps({"invoices": [], "subject": claims.subject, "client_id": claims.client_id})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode("utf-8")]

    return app


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--usher", default="127.0.0.1:50051", help="usher's gRPC address")
    p.add_argument("--audience", default="api/invoices", help="the audience this API answers to")
    p.add_argument("--listen", default="127.0.0.1:8000", help="HTTP address (host:port)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host, _, port = args.listen.rpartition(":")
    with UsherAuth(args.usher, args.audience) as auth:
        with make_server(host, int(port), make_app(auth)) as srv:
            print("Invoices API on http://%s:%d, asking usher at %s" % (host, srv.server_port, args.usher))
            try:
                srv.serve_forever()
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
