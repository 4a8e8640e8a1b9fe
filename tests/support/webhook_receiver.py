#!/usr/bin/env python3
"""A Standard Webhooks receiver on 127.0.0.1 that verifies every request independently.

Usage: webhook_receiver.py SECRET OUT_FILE [PORT]
Binds 127.0.0.1 on PORT (default: a free port), prints "PORT <n>" on stdout, then for every POST verifies the
body against its headers with the PyPI `standardwebhooks` package (the reference library) and
appends one JSON line {"id", "ok", "type", "body", "error"} to OUT_FILE. Answers 204 when the
signature verifies, 400 when it does not. Runs until killed.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


def main() -> None:
    secret, out_path = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    hook = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            record = {"id": headers.get("webhook-id"), "ok": False, "type": None,
                      "body": body.decode("utf-8", "replace"), "error": None}
            try:
                payload = hook.verify(body, headers)
                record["ok"] = True
                record["type"] = payload.get("type")
            except Exception as e:  # any failure is a verification failure
                record["error"] = f"{type(e).__name__}: {e}"
            with open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self.send_response(204 if record["ok"] else 400)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
