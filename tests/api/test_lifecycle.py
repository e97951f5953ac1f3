"""Process lifecycle: graceful shutdown with a request in flight, the data-directory lock,
restarts (clean and after kill -9) keeping keys and tenants."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import Server, ServerStartError, parse_http_response


def read_response(sock):
    buf = b""
    while True:
        resp = parse_http_response(buf)
        if resp and len(resp[2]) >= int(resp[1].get("content-length", "0")):
            return resp
        chunk = sock.recv(65536)
        if not chunk:
            return parse_http_response(buf)
        buf += chunk


def wait_listener_closed(server, timeout=10):
    """Returns once a new connection is refused (the server stopped accepting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((server.host, server.port), timeout=2).close()
        except OSError:
            return
        time.sleep(0.005)
    raise AssertionError("the listener is still open %d s after SIGTERM" % timeout)


def test_sigterm_exits_zero(server):
    assert server.get("/healthz").status_code == 200
    assert server.stop() == 0
    # a stopped server releases its port
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def test_sigint_exits_zero(server):
    assert server.stop(sig=signal.SIGINT) == 0


def test_graceful_shutdown_completes_inflight_upload(server):
    """A request whose body is still arriving when SIGTERM comes is completed and answered;
    then the server exits 0."""
    body = json.dumps({"name": "inflight", "role": "viewer"}).encode()
    s = socket.create_connection((server.host, server.port))
    s.settimeout(30)
    head = ("POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (server.admin_key, len(body))).encode()
    s.sendall(head + body[:7])
    # make sure the server has read the partial request before the signal
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    # Draining has begun once the listener is closed. The rest of the body must then come
    # at once: a draining server gives a slow request 1 s from its last byte.
    wait_listener_closed(server)
    assert server.proc.poll() is None, "server exited with a request in flight"
    s.sendall(body[7:])
    status, headers, payload = read_response(s)
    s.close()
    assert status == 201, payload
    created = json.loads(payload)
    assert created["name"] == "inflight"
    assert server.proc.wait(30) == 0
    # the request really happened: the key exists after a restart
    server.restart()
    ids = {k["id"] for k in server.get("/v1/keys").json()["items"]}
    assert created["id"] in ids


def test_draining_answers_in_flight_request_with_connection_close(server):
    """While draining, the listener is closed (a readiness probe cannot connect) and a
    request that was already arriving is answered with Connection: close."""
    body = b'{"name":"x","role":"viewer"}'
    s = socket.create_connection((server.host, server.port))
    s.settimeout(30)
    s.sendall(("POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (server.admin_key, len(body))).encode() + body[:3])
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    wait_listener_closed(server)
    s.sendall(body[3:])
    status, headers, _ = read_response(s)
    assert status == 201
    assert headers.get("connection", "").lower() == "close"
    assert s.recv(1) == b""  # the server closed the connection after answering
    s.close()
    assert server.proc.wait(30) == 0


def test_shutdown_not_held_up_by_idle_keepalive(start_server):
    s = start_server("--idle-timeout-ms", "600000", "--shutdown-timeout-ms", "600000")
    c = socket.create_connection((s.host, s.port))
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(c)[0] == 200
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        c.close()
    assert rc == 0


def test_second_server_on_same_data_dir_refuses(server):
    second = Server(args=["--threads", "1"], data_dir=server.data_dir)
    try:
        with pytest.raises(ServerStartError):
            second.start()
        assert second.proc.returncode != 0
        assert os.path.realpath(server.data_dir) in second.stderr()
    finally:
        second.cleanup()
    assert server.get("/v1/info").status_code == 200  # the first one is unaffected


def test_second_server_on_same_address_refuses(server):
    """Another data directory, same address: without the check the second process joined
    the SO_REUSEPORT group and took a share of the connections (and their keys)."""
    addr = "%s:%d" % (server.host, server.port)
    for listen in (addr, "0.0.0.0:%d" % server.port):  # the wildcard overlaps it too
        second = Server(args=["--threads", "2", "--listen", listen, "--no-auth"], listen=False)
        try:
            with pytest.raises(ServerStartError):
                second.start()
            assert second.proc.returncode != 0
            assert "already in use by another process" in second.stderr(), second.stderr()
        finally:
            second.cleanup()
    # every connection still reaches the first server (its bootstrap key works)
    for _ in range(20):
        r = requests.get(server.url + "/v1/info",
                         headers={"Authorization": "Bearer " + server.admin_key,
                                  "Connection": "close"}, timeout=10)
        assert r.status_code == 200
        assert r.json()["data_dir"] == os.path.realpath(server.data_dir)


def test_restart_on_the_same_port_after_stop(server):
    # the probe must not mistake the previous run's closed connections for another process
    server.get("/healthz")
    port = server.port
    server.args += ["--listen", "127.0.0.1:%d" % port]
    server.listen = False
    server.restart()
    assert server.port == port
    assert server.get("/healthz").status_code == 200


def test_restart_keeps_keys_and_tenants(server):
    assert server.post("/v1/tenants", json={"name": "persist"}).status_code == 201
    k = server.create_key("developer", name="persisted", tenant="persist")
    assert server.stop() == 0
    server.start()
    # no new bootstrap key is printed on the second start
    assert "bsk_" not in server.stdout()
    assert server.get("/v1/info").status_code == 200  # the first admin key still works
    info = server.get("/v1/info", key=k["key"]).json()
    assert info["caller"] == {"key_id": k["id"], "tenant": "persist", "role": "developer"}
    assert "persist" in [t["name"] for t in server.get("/v1/tenants").json()["items"]]


def test_kill9_then_restart_keeps_key_created_just_before(server):
    k = server.create_key("viewer", name="just-before")
    t = server.post("/v1/tenants", json={"name": "crash"})
    assert t.status_code == 201
    server.kill9()
    assert server.proc.returncode == -signal.SIGKILL
    server.start()  # the lock held by the dead process is gone
    assert server.get("/v1/info", key=k["key"]).status_code == 200
    assert "crash" in [x["name"] for x in server.get("/v1/tenants").json()["items"]]


def test_deleted_key_stays_deleted_after_restart(server):
    k = server.create_key("viewer")
    assert server.delete("/v1/keys/" + k["id"]).status_code == 204
    server.kill9()
    server.start()
    assert server.get("/v1/info", key=k["key"]).status_code == 401


def test_bootstrap_key_printed_once(start_server):
    s = start_server("--threads", "1")
    assert s.admin_key and s.admin_key.startswith("bsk_")
    assert s.stdout().count("bsk_") == 1
    first = s.admin_key
    s.restart()
    assert "bsk_" not in s.stdout()
    assert s.get("/v1/info", key=first).status_code == 200
