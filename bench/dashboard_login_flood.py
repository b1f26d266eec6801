"""A flood of anonymous sign-ins against `outbox serve --dashboard` (one process): its peak
memory, how many were refused at once (429), and how long a signed-in page took meanwhile,
against the same page before the flood (a same-run ratio).

    DATABASE_URL=postgresql+psycopg://... python -m bench.dashboard_login_flood [--logins 40]

Issue 23 measured 40 concurrent logins taking the process from 101 MiB to 1.4 GiB (argon2
at 64 MiB each, unbounded) and a signed-in page to 2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from web.dashboard import hash_password

PASSWORD = "a long operator password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def _form(base: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token  # noqa: S101 - a benchmark's precondition
    return client, token.group(1)


def _page_ms(client: httpx.Client, n: int) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        assert client.get("/audit").status_code == 200  # noqa: S101
        took.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=40)
    args = parser.parse_args()
    port = _free_port()
    env = {
        **os.environ,
        "DASHBOARD_USERS": f"olga:operator:{hash_password(PASSWORD)}",
        "DASHBOARD_SECRET_KEY": "b" * 40,
        "LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryFile() as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--dashboard", "--port", str(port)],
            env=env, stdout=sink, stderr=sink,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the dashboard did not start")
                time.sleep(0.2)
            operator, token = _form(base)
            operator.post(
                "/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token}
            )
            before = _page_ms(operator, 20)
            rss_before = _rss_mib(process.pid, "VmRSS")
            forms = [_form(base) for _ in range(args.logins)]

            def post(form: tuple[httpx.Client, str]) -> int:
                client, tok = form
                data = {"username": f"x{id(client)}", "password": "guess", "csrf_token": tok}
                return client.post("/login", data=data).status_code

            with ThreadPoolExecutor(args.logins + 1) as pool:
                flood = [pool.submit(post, f) for f in forms]
                during = _page_ms(operator, 20)
                codes = [f.result() for f in flood]
            peak = _rss_mib(process.pid, "VmHWM")
        finally:
            process.terminate()
            process.wait(timeout=15)
    print(
        f"{args.logins} concurrent sign-ins: {codes.count(429)} refused at once (429), "
        f"{codes.count(401)} verified (401)"
    )
    print(f"memory: {rss_before:.0f} MiB before, peak {peak:.0f} MiB")
    b, d = statistics.median(before), statistics.median(during)
    print(f"signed-in /audit median: {b:.1f} ms before, {d:.1f} ms during ({d / b:.2f}x)")


if __name__ == "__main__":
    main()
