"""Sends error events to a relay with the real Python sentry-sdk and prints their ids as JSON.

Usage: send_events.py DSN COMPRESSION COUNT [LOG [LOGGED]]   (COMPRESSION: gzip or br)

With LOG (not empty), each event carries that text as a gzip'd log
attachment (`app.log.1.gz`, `application/gzip`), as an app attaches a
rotated log.

With LOGGED (`logged`), each error is reported through Python's logging,
as the SDK's logging integration does by default: `logger.exception` with
a password among the message's parameters (the event's `logentry`), after
a `logger.warning` with an API key among its parameters, sent as a Sentry
log (`enable_logs`: `sentry.message.parameter.N` attributes). Before each,
the app fetches a password-reset link from a local server with
`http.client`, which the SDK's stdlib integration (on by default) records
as an HTTP breadcrumb with the link's URL, token and all.
"""
import gzip
import http.client
import http.server
import json
import logging
import sys
import threading

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.stdlib import StdlibIntegration

# The secrets the logged messages carry as parameters.
PASSWORD = "Hunt3rTwo!"
API_KEY = "ak-5f9e2c1d7b"
# The token of the password-reset link the app fetches (Django's shape).
RESET_TOKEN = "c3k2lp-8f1e2d3c4b5a6978e0d1"


class Quiet(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and logs nothing."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def fetch_reset_link(port: int) -> None:
    """GETs a password-reset link from the local server: an HTTP breadcrumb."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/accounts/reset/MTIz/{RESET_TOKEN}/")
    conn.getresponse().read()
    conn.close()


def main(dsn: str, compression: str, count: int, log: str | None, logged: bool) -> None:
    if compression == "br":
        import brotli  # noqa: F401  (the SDK silently falls back to gzip without it)
    integrations = []
    server = None
    if logged:
        integrations.append(
            LoggingIntegration(
                level=None, event_level=logging.ERROR, sentry_logs_level=logging.WARNING
            )
        )
        integrations.append(StdlibIntegration())
        server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    sentry_sdk.init(
        dsn=dsn,
        release="shop@2.4.1",
        environment="production",
        default_integrations=False,
        integrations=integrations,
        enable_logs=logged,
        _experiments={"transport_compression_algo": compression},
    )
    logger = logging.getLogger("shop.checkout")
    logger.addHandler(logging.NullHandler())  # the SDK's, not stderr
    ids = []
    for i in range(count):
        try:
            raise ValueError(f"order {i} could not be charged")
        except ValueError:
            if logged:
                fetch_reset_link(server.server_address[1])
                logger.warning("retrying with --api-key %s for %s", API_KEY, "bob")
                logger.exception("login failed password=%s for %s", PASSWORD, "bob")
                ids.append(sentry_sdk.last_event_id())
                continue
            if not log:
                ids.append(sentry_sdk.capture_exception())
                continue
            with sentry_sdk.new_scope() as scope:
                scope.add_attachment(
                    bytes=gzip.compress(log.encode(), mtime=0),
                    filename="app.log.1.gz",
                    content_type="application/gzip",
                )
                ids.append(sentry_sdk.capture_exception())
    sentry_sdk.flush(timeout=30)
    if any(i is None for i in ids):
        sys.exit("the SDK dropped an event before sending it")
    print(json.dumps(ids))


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4] if len(sys.argv) > 4 else None,
        len(sys.argv) > 5 and sys.argv[5] == "logged",
    )
