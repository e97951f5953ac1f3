"""A minimal keep-alive HTTP/1.1 client for bench/predict/profile.sh.

Usage: client.py PORT PATH BODY_FILE N [BEARER_TOKEN]

Sends N identical POST requests (the bytes wrk sends: Host, Content-Type,
Content-Length, plus Authorization when a token is given) one after the other
on one connection, reads each full response (Content-Length framing) and
exits non-zero on anything but 200. The server is the thing measured, so the
client only has to be correct, not fast.
"""
import socket
import sys

port, path, body_file, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
token = sys.argv[5] if len(sys.argv) > 5 else ""
body = open(body_file, "rb").read()
head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (path, port)
if token:
    head += "Authorization: Bearer %s\r\n" % token
head += "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
req = head.encode() + body

s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b""
for i in range(n):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("client: connection closed after %d responses" % i)
        buf += chunk
    hdr, _, buf = buf.partition(b"\r\n\r\n")
    status = hdr.split(b" ", 2)[1]
    length = 0
    for line in hdr.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(buf) < length:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("client: connection closed in a body after %d responses" % i)
        buf += chunk
    resp, buf = buf[:length], buf[length:]
    if status != b"200":
        sys.exit("client: response %d was %s: %r" % (i, status.decode(), resp[:300]))
s.close()
