#!/usr/bin/env python3
"""A webhook receiver for trying basalt's webhooks: verifies each delivery's Standard
Webhooks signature (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256
of "id.timestamp.body"> under the destination's whsec_ secret) and prints one JSON line per
delivery: {"id", "verified", "event"} (+ "error" when not verified).

    /usr/bin/python3 tools/webhook_receiver.py --port 9000 --secret whsec_... [--out FILE]

Answers 204 to a verified delivery and 401 to one whose signature does not match (or is
older than five minutes), as a receiver should. Standard library only.

verify() is the one Python verifier of the project: docs/webhooks.md prints it and
tests/api/test_webhooks.py checks every delivery with it.
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret, headers, body, now=None, tolerance_s=300):
    """True if body carries a valid Standard Webhooks signature under secret, with a
    timestamp within tolerance_s of now; raises ValueError otherwise. headers: lower-case
    names (or a case-insensitive mapping). body: the raw bytes, before any JSON parsing."""
    msg_id = headers.get("webhook-id") or ""
    ts = headers.get("webhook-timestamp") or ""
    if not msg_id or not (ts.isascii() and ts.isdigit()):
        raise ValueError("missing webhook-id, or webhook-timestamp is not a number")
    now = time.time() if now is None else now
    if abs(now - int(ts)) > tolerance_s:
        raise ValueError("timestamp %s is more than %d s from now (a replay?)" % (ts, tolerance_s))
    if not secret.startswith("whsec_"):
        raise ValueError("the secret must start with whsec_")
    key = secret[len("whsec_"):]
    key = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)  # padded or not
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for sig in (headers.get("webhook-signature") or "").split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    raise ValueError("no valid v1 signature in %r" % headers.get("webhook-signature"))


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
            try:
                n = int(self.headers.get("content-length", "0"))
            except ValueError:
                n = -1
            if n < 0:
                self.send_error(400, "bad Content-Length")
                return
            body = self.rfile.read(n)
            line = {"id": self.headers.get("webhook-id"), "verified": True}
            try:
                verify(args.secret, self.headers, body)
            except ValueError as e:
                line.update(verified=False, error=str(e))
            try:
                line["event"] = json.loads(body)
            except ValueError:
                line["event"] = None
            out.write(json.dumps(line) + "\n")
            out.flush()
            self.send_response(204 if line["verified"] else 401)
            self.end_headers()

        def log_message(self, *a):
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
