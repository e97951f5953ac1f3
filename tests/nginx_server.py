"""nginx as a load balancer in front of basalt replicas, for the multi-replica tests.

    lb = NginxBalancer(["127.0.0.1:8001", "127.0.0.1:8002"]).start()
    requests.get(lb.url + "/healthz")
    lb.stop()

One nginx process (`master_process off`, so it runs as the calling user and needs no
`user` directive when the tests run as root) listens on a free port in a temporary
prefix directory and proxies every request round-robin to the upstreams with
HTTP/1.1 keep-alive. Bodies are streamed (no buffering limits beyond basalt's own).
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NginxBalancer:
    def __init__(self, upstreams):
        self.upstreams = list(upstreams)
        self.dir = tempfile.mkdtemp(prefix="basalt-nginx-")
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None

    def _config(self):
        servers = "".join("        server %s;\n" % u for u in self.upstreams)
        d = self.dir
        return f"""
master_process off;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream basalt {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://basalt;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_next_upstream off;
        }}
    }}
}}
"""

    def start(self, timeout=10):
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self._config())
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-e", os.path.join(self.dir, "error.log"),
                                      "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "wb"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not listen:\n" + self.log())

    def log(self):
        out = []
        for name in ("error.log", "stderr"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                out.append(open(p, errors="replace").read())
        return "\n".join(out)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
