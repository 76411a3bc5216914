"""A webhook receiver for tests/api/webhooks.rs: verifies each request with the Standard
Webhooks reference library (PyPI `standardwebhooks`), and appends one JSON line per request
to a file: the webhook-id, whether the signature verified, the event type and the body.

    python3 tests/webhooks/receiver.py PORT SECRET OUT_FILE [DELAY_MS]

Answers 204 when the signature verifies, 400 otherwise. DELAY_MS makes each answer late (to
kill voxline mid-delivery). Stops when killed.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port, secret, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
delay = int(sys.argv[4]) / 1000.0 if len(sys.argv) > 4 else 0.0
wh = Webhook(secret)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = wh.verify(body, headers)
            verified, kind = True, payload.get("type")
        except WebhookVerificationError as e:
            verified, kind = False, str(e)
        if delay:
            time.sleep(delay)
        line = {
            "id": headers.get("webhook-id"),
            "verified": verified,
            "type": kind,
            "body": body.decode("utf-8", "replace"),
        }
        with open(out_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(204 if verified else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
