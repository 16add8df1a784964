"""Writes the benchmark corpus: Python-SDK-shaped error events of about 2, 8 and 20 KB
(exception with frame vars, breadcrumbs, request, contexts) carrying a few secrets
(a card, an email, an IP, a password, a bearer token, a session cookie, a query token),
as the shared yardstick's event does. Rerun to regenerate."""
import json


def event(frames: int, crumbs: int) -> dict:
    return {
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": 1795200010.5,
        "platform": "python",
        "level": "error",
        "logger": "app.checkout",
        "server_name": "web-7",
        "release": "shop@2.4.1",
        "environment": "production",
        "exception": {"values": [{
            "type": "CardDeclinedError",
            "value": "card 4111 1111 1111 1111 declined for alice@example.com",
            "module": "payments.errors",
            "mechanism": {"type": "django", "handled": False},
            "stacktrace": {"frames": [{
                "filename": f"app/module_{i}.py",
                "abs_path": f"/srv/app/app/module_{i}.py",
                "function": f"handler_{i}",
                "module": f"app.module_{i}",
                "lineno": 10 + i,
                "in_app": i > 3,
                "context_line": f"    result = process_{i}(request, user_id=user.id)",
                "pre_context": ["def handler(request):", "    user = request.user"],
                "post_context": ["    return result", ""],
                "vars": {"request": "<WSGIRequest: POST '/checkout'>", "user_id": 1000 + i,
                         "items": ["sku-1", "sku-2"], "attempt": i % 3,
                         "password": "hunter2" if i == 1 else "n/a"},
            } for i in range(frames)]},
        }]},
        "breadcrumbs": {"values": [{
            "timestamp": 1795200000.0 + i,
            "category": "query" if i % 2 == 0 else "http",
            "message": f"SELECT * FROM orders WHERE id = {i}" if i % 2 == 0 else None,
            "data": {"url": f"https://api.example.com/v1/items/{i}", "method": "GET", "status_code": 200},
        } for i in range(crumbs)]},
        "request": {"url": "https://shop.example.com/checkout", "method": "POST",
                    "query_string": "step=2&token=abc123",
                    "headers": {"Host": "shop.example.com", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)",
                                "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                                "Cookie": "sessionid=abcdef123456; theme=dark", "Accept": "text/html"},
                    "env": {"REMOTE_ADDR": "203.0.113.7", "SERVER_NAME": "web-7"}},
        "user": {"id": "1042", "email": "alice@example.com", "ip_address": "203.0.113.7"},
        "contexts": {"runtime": {"name": "CPython", "version": "3.12.1"},
                     "os": {"name": "Linux", "version": "6.1"},
                     "trace": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}},
        "tags": {"shop": "eu-1", "payment_provider": "acme"},
        "sdk": {"name": "sentry.python.django", "version": "2.75.0"},
    }


for name, frames, crumbs in [("event-2k", 2, 3), ("event-8k", 12, 10), ("event-20k", 30, 40)]:
    with open(f"{name}.json", "w") as f:
        json.dump(event(frames, crumbs), f, separators=(",", ":"))
