"""Sends error events to a relay with the real Python sentry-sdk and prints their ids as JSON.

Usage: send_events.py DSN COMPRESSION COUNT [LOG]   (COMPRESSION: gzip or br)

With LOG, each event carries that text as a gzip'd log attachment
(`app.log.1.gz`, `application/gzip`), as an app attaches a rotated log.
"""
import gzip
import json
import sys

import sentry_sdk


def main(dsn: str, compression: str, count: int, log: str | None) -> None:
    if compression == "br":
        import brotli  # noqa: F401  (the SDK silently falls back to gzip without it)
    sentry_sdk.init(
        dsn=dsn,
        release="shop@2.4.1",
        environment="production",
        default_integrations=False,
        _experiments={"transport_compression_algo": compression},
    )
    ids = []
    for i in range(count):
        try:
            raise ValueError(f"order {i} could not be charged")
        except ValueError:
            if log is None:
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
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
