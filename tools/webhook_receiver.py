#!/usr/bin/env python3
"""A webhook receiver for trying basalt's webhooks: verifies each delivery's Standard
Webhooks signature (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256
of "id.timestamp.body"> under the destination's whsec_ secret) and prints one JSON line per
delivery: {"id", "verified", "event"}.

    /usr/bin/python3 tools/webhook_receiver.py --port 9000 --secret whsec_... [--out FILE]

Answers 204 to a verified delivery and 401 to one whose signature does not match (or is
older than five minutes), as a receiver should. Standard library only.
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300


def verify(secret, msg_id, timestamp, body, signatures):
    """True if one of the space-separated "v1,<base64>" signatures signs id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # padded or not
    signed = b"%s.%s.%s" % (msg_id.encode(), timestamp.encode(), body)
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    try:
        if abs(time.time() - int(timestamp)) > TOLERANCE_S:
            return False
    except ValueError:
        return False
    for sig in signatures.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--secret", required=True, help="the destination's whsec_… secret")
    ap.add_argument("--out", help="append the JSON lines to this file instead of stdout")
    args = ap.parse_args()
    out = open(args.out, "a", buffering=1) if args.out else sys.stdout

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            ok = verify(args.secret, self.headers.get("webhook-id", ""),
                        self.headers.get("webhook-timestamp", ""), body,
                        self.headers.get("webhook-signature", ""))
            try:
                event = json.loads(body)
            except ValueError:
                event = None
            out.write(json.dumps({"id": self.headers.get("webhook-id"), "verified": ok,
                                  "event": event}) + "\n")
            out.flush()
            self.send_response(204 if ok else 401)
            self.end_headers()

        def log_message(self, *a):
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
