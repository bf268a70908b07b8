#!/usr/bin/env python
"""Server CPU per HTTP request: one uvicorn process, a few keep-alive clients, one path.

    .venv/bin/python bench/http_overhead.py /health/
    .venv/bin/python bench/http_overhead.py /api/v1/conversations/CONVERSATION/turns/1/
    .venv/bin/python bench/http_overhead.py /health/ --factory \
        --app django.core.asgi:get_asgi_application      # Django's ASGI handler alone

CONVERSATION in the path is replaced by a conversation created for the run (with one
turn). Uses the bench database and Redis db of bench/turns.py (run that once first, or
pass --database-url / --redis-url of a migrated database with the demo data).
Reports the server process's CPU time (user + system) per request and requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turns as bench  # the bench's HTTP client and defaults

CLIENTS = 4


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_api_key(env: dict) -> str:
    script = (
        "from django.contrib.auth import get_user_model;"
        "from access.services import api_key_create;"
        "user, _ = get_user_model().objects.get_or_create(username='http-overhead');"
        "print(api_key_create(user=user, name='http-overhead')[1])"
    )
    out = subprocess.run(
        [bench.BIN / "python", "manage.py", "shell", "-c", script],
        cwd=bench.ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def measure(args, port: int, api_key: str, pid: int) -> tuple[float, float, int]:
    """(server CPU seconds, wall seconds, requests) of the measured requests."""
    clients = [bench.RawClient(port, api_key) for _ in range(CLIENTS)]
    path = args.path
    if "CONVERSATION" in path:
        _, conversation = await clients[0].request("POST", "/api/v1/conversations/", {})
        turns = f"/api/v1/conversations/{conversation['id']}/turns/"
        await clients[0].request("POST", turns, {"text": "Hello there"})
        path = path.replace("CONVERSATION", conversation["id"])

    async def loop(client, count):
        for _ in range(count):
            status, _ = await client.request("GET", path)
            if status != 200:
                raise SystemExit(f"GET {path} answered {status}")

    await asyncio.gather(*(loop(client, 20) for client in clients))  # warm up
    per_client = args.requests // CLIENTS
    cpu, started = process_cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(loop(client, per_client) for client in clients))
    return process_cpu_seconds(pid) - cpu, time.monotonic() - started, per_client * CLIENTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--app", default="orchestra_site.asgi:application")
    parser.add_argument("--app-dir", default=str(bench.ROOT))
    parser.add_argument("--factory", action="store_true", help="--app names an app factory")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", default=bench.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=bench.DEFAULT_REDIS_URL)
    args = parser.parse_args()

    env = dict(
        os.environ,
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(bench.ROOT),
        DJANGO_SETTINGS_MODULE="orchestra_site.settings",
    )
    api_key = create_api_key(env)
    server = subprocess.Popen(
        [
            *(bench.BIN / "uvicorn", args.app, "--app-dir", args.app_dir),
            *("--port", str(args.port), "--no-access-log"),
            *(["--factory"] if args.factory else []),
        ],
        cwd=bench.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(args.port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("uvicorn did not start")
            time.sleep(0.2)
        cpu, elapsed, count = asyncio.run(measure(args, args.port, api_key, server.pid))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    print(
        f"{args.path}: server CPU {1000 * cpu / count:.2f} ms/request, {count / elapsed:.0f} req/s"
    )
    return 0


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((bench.HOST, port)) == 0


if __name__ == "__main__":
    sys.exit(main())
