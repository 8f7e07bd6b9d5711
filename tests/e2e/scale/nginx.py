"""nginx from the distribution in front of gateway processes, configured from the shipped
deploy/nginx/gateway.conf.template: for the scale tests and bench/scale.py."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from tests.support import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "deploy" / "nginx" / "gateway.conf.template"


def installed_nginx() -> str | None:
    """nginx's binary (Debian's is in /usr/sbin, not on every user's PATH), or None."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Nginx:
    """nginx in the foreground with a prefix of its own: the template rendered for `servers`, an
    access log that names the process (upstream address) that answered each request."""

    def __init__(self, binary: str, workdir: Path, servers: list[str]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        lines = " ".join(f"server {server} max_fails=1 fail_timeout=5s;" for server in servers)
        site = TEMPLATE.read_text().replace("${GATEWAY_SERVERS}", lines)
        (workdir / "gateway.conf").write_text(site.replace("${NGINX_LISTEN}", f"127.0.0.1:{self.port}"))
        for temp in ("body", "proxy"):
            (workdir / temp).mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(f"""
# `user` counts only when nginx starts as root (CI): its workers then keep to that user.
user {getpass.getuser()};
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {self.access_log} upstream;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    include {workdir}/gateway.conf;
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        check = subprocess.run(
            [self.binary, "-t", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        log = (self.workdir / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # fast shutdown
            self.process.wait(10)

    def served(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, upstream address) of every request so far, oldest first."""
        rows = []
        for line in self.access_log.read_text().splitlines():
            method, path, status, upstream = line.split(" ", 3)
            rows.append((method, path, int(status), upstream.split(", ")[-1]))  # the one that answered
        return rows
