#!/usr/bin/env python
"""Full-stack turn throughput and orchestration overhead (docs/performance.md).

Starts the real processes (uvicorn, a Celery worker and beat) against a dedicated database
and Redis db, drives load over HTTP on 127.0.0.1, then reads the turns back from PostgreSQL:

- sustained throughput: turns completed (Turn.completed_at) inside the measurement window,
  per second;
- orchestration overhead per turn: (completed_at - created_at) - model_ms, from the row;
  its split into queue (created -> started) and execution minus model time;
- client latency: POST submitted -> GET ?wait= answered with the terminal turn.

Each of the --conversations client loops owns one conversation: POST a turn, GET it with
?wait=30 until it is terminal (with --prefer-wait: POST with `Prefer: wait=30`, whose
answer is the terminal turn), repeat: at once (closed loop: the system runs saturated,
throughput is its capacity) or paced to --rate turns/s in total (overhead below
saturation). Loops run for --warmup + --duration seconds; only turns *submitted* after the
warm-up count for the latency percentiles, and throughput counts completions inside the
window. Bounded: --max-turns in total, and a hard deadline. Also reported: the CPU each
component used per completed turn, and the machine's CPU used by anything else.

    .venv/bin/python bench/turns.py                          # 2 web workers, 1x16 celery
    .venv/bin/python bench/turns.py --rate 10                # 10 turns/s offered
    .venv/bin/python bench/turns.py --web-workers 1,2 --celery-concurrency 8,16 --json out.json

Stdlib only (plus psycopg and redis from the project's requirements). The HTTP client is a
minimal keep-alive HTTP/1.1 client on asyncio streams, so the load generator takes as
little as possible of the CPU it shares with the system under test; `--client httpx` uses
httpx instead when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The build the virtualenv was made from: how it was compiled moves every number (§3).
INTERPRETER = Path(sys.executable).resolve()
HOST = "127.0.0.1"

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/orchestra_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/3"
BENCH_USER = "bench"

QUESTIONS = [
    "Where is my parcel {ref}? It was due on {day}.",
    "Can I change the delivery address of order {ref} to my office?",
    "Do you ship {item} to {country}, and how long does it take?",
    "I was charged twice for order {ref}; please check my card statement.",
    "What is the return policy for a {item} bought on {day}?",
    "Is the {item} in stock in the {country} warehouse?",
    "My invoice for {ref} shows the wrong VAT number, can you fix it?",
    "How much is express shipping of a {item} to {country}?",
]
WORDS = {
    "day": [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ],
    "item": [
        "kettle",
        "lamp",
        "desk chair",
        "backpack",
        "monitor",
        "coffee grinder",
        "rug",
    ],
    "country": ["Germany", "France", "Spain", "Italy", "Poland", "Austria", "Belgium"],
}


def question(rng: random.Random) -> str:
    """Different questions, so the demo agent's anti-echo (regenerate) does not fire:
    the bench measures the ordinary path, one model call per turn."""
    template = rng.choice(QUESTIONS)
    return template.format(
        ref=f"A-{rng.randrange(10**6):06d}",
        **{k: rng.choice(v) for k, v in WORDS.items()},
    )


# --- Processes ---------------------------------------------------------------------------

_children: list[subprocess.Popen] = []


def _stop_children() -> None:
    """Terminate every process group this script started (and only those)."""
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in _children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _children.clear()


atexit.register(_stop_children)


def _on_signal(signum, _frame):
    _stop_children()
    sys.exit(128 + signum)


def start(cmd: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _children.append(proc)
    return proc


def manage(env: dict, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return result.stdout.strip() if capture else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def process_group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # field 5: pgrp
                pids.append(int(entry))
    return pids


def pids_named(*names: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() in names:
                    pids.append(int(entry))
    return pids


def postgres_pids(database: str) -> list[int]:
    """The postmaster (its cutime holds the CPU of backends that have exited), its shared
    background processes, and the backends of `database`; not other databases' backends."""
    pids = []
    for pid in pids_named("postgres"):
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            words = title.split()
            # A backend's title: "postgres: <cluster>: <user> <database> <host(port)> <state>"
            is_backend = len(words) >= 5 and words[0] == "postgres:" and "(" in words[4]
            if not is_backend or words[3] == database:
                pids.append(pid)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) of these processes and of their children
    that have exited and been reaped (PostgreSQL forks a backend per connection: the
    postmaster's cutime keeps the CPU of the ones that are gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


class CpuMeter:
    """CPU used per component between start() and stop()."""

    def __init__(self, groups: dict):
        self.groups = groups  # name -> function returning the component's pids
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(find()) for name, find in self.groups.items()}
        self._machine = machine_cpu_seconds()

    def stop(self) -> None:
        for name, find in self.groups.items():
            self.used[name] = cpu_seconds(find()) - self._start[name]
        busy0, total0 = self._machine
        busy1, total1 = machine_cpu_seconds()
        self.used["machine busy"] = busy1 - busy0
        self.used["machine capacity"] = total1 - total0


# --- HTTP client -------------------------------------------------------------------------


class HTTPError(Exception):
    pass


class RawClient:
    """Keep-alive HTTP/1.1 on one connection; requests one at a time (a client loop)."""

    def __init__(self, port: int, api_key: str):
        self.port = port
        self.auth = f"Authorization: Bearer {api_key}\r\n"
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ):
        payload = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{self.auth}{extra}"
            f"Accept: application/json\r\n"
            + (
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                if body is not None
                else ""
            )
            + "\r\n"
        ).encode()
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    await self._connect()
                self.writer.write(head + payload)
                await self.writer.drain()
                return await self._read_response()
            except (ConnectionError, asyncio.IncompleteReadError, HTTPError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_response(self):
        status_line = await self.reader.readline()
        if not status_line:
            raise HTTPError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = b""
            while (size := int((await self.reader.readline()).split(b";")[0], 16)) > 0:
                body += await self.reader.readexactly(size + 2)
                body = body[:-2]
            await self.reader.readline()
        else:
            body = await self.reader.readexactly(length or 0)
        if close:
            await self.close()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None  # not JSON (a proxy's or server's error page)


class HttpxClient:
    def __init__(self, port: int, api_key: str):
        import httpx

        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
        )

    async def request(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ):
        response = await self._client.request(method, path, json=body, headers=headers)
        return response.status_code, response.json() if response.content else None

    async def close(self):
        await self._client.aclose()


# --- Load --------------------------------------------------------------------------------


@dataclass
class Sample:
    conversation: str
    number: int
    submitted: float  # time.time() when the POST was sent
    post_ms: float
    done_ms: float | None  # submit -> terminal turn in hand (client view)
    polls: int
    status: str


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    conversations: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0
    db_connections: list[int] = field(default_factory=list)


async def sample_connections(database_url: str, until: float, result: LoadResult) -> None:
    """How many PostgreSQL connections the bench database has, once a second."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.time() < until:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchone()
            result.db_connections.append(row[0] - 1)  # not this one
            await asyncio.sleep(1)


async def run_load(
    args, port: int, api_keys: list[str], window: tuple[float, float], meter: CpuMeter
):
    result = LoadResult()
    client_class = HttpxClient if args.client == "httpx" else RawClient
    stop_at = window[1]
    budget = itertools.count()  # shared turn counter: --max-turns bound

    def error(kind: str) -> None:
        result.errors[kind] = result.errors.get(kind, 0) + 1

    async def loop(index: int):
        client = client_class(port, api_keys[index])
        rng = random.Random(index)
        try:
            status, body = await client.request(
                "POST", "/api/v1/conversations/", {"metadata": {"bench": index}}
            )
            if status != 201:
                error(f"create {status}")
                return
            conversation = body["id"]
            result.conversations.append(conversation)
            await started.wait()
            # Paced (--rate): this loop's share of the offered load, phase-shifted at random;
            # a loop that falls behind submits at once (it never bunches up to catch up).
            interval = args.conversations / args.rate if args.rate else 0.0
            # --prefer-wait: the submission's answer waits for the turn (one request a turn).
            submit_headers = {"Prefer": f"wait={args.wait}"} if args.prefer_wait else None
            next_at = time.time() + rng.random() * interval
            while time.time() < stop_at and next(budget) < args.max_turns:
                if interval:
                    if (delay := next_at - time.time()) > 0:
                        await asyncio.sleep(delay)
                    next_at = max(next_at + interval, time.time())
                    if time.time() >= stop_at:
                        break
                submitted = time.time()
                t0 = time.perf_counter()
                status, body = await client.request(
                    "POST",
                    f"/api/v1/conversations/{conversation}/turns/",
                    {"text": question(rng), "turn_id": uuid.uuid4().hex},
                    submit_headers,
                )
                post_ms = (time.perf_counter() - t0) * 1000
                if status != 202:
                    error(f"submit {status} {(body or {}).get('error', {}).get('code')}")
                    await asyncio.sleep(0.05)
                    continue
                number, turn_status, polls = body["number"], body["status"], 0
                path = f"/api/v1/conversations/{conversation}/turns/{number}/?wait={args.wait}"
                while turn_status in ("queued", "processing") and polls < args.max_polls:
                    polls += 1
                    status, body = await client.request("GET", path)
                    if status != 200:
                        error(f"wait {status}")
                        break
                    turn_status = body["status"]
                done_ms = (time.perf_counter() - t0) * 1000
                if turn_status != "completed":
                    error(f"turn {turn_status}")
                result.samples.append(
                    Sample(
                        conversation,
                        number,
                        submitted,
                        post_ms,
                        done_ms,
                        polls,
                        turn_status,
                    )
                )
        except Exception as exc:  # noqa: BLE001 (counted and reported)
            error(f"client {type(exc).__name__}: {exc}"[:120])
        finally:
            await client.close()

    started = asyncio.Event()
    tasks = [asyncio.create_task(loop(i)) for i in range(args.conversations)]
    # Every loop has its conversation before the clock starts.
    while len(result.conversations) + sum(result.errors.values()) < args.conversations:
        await asyncio.sleep(0.01)
    started.set()
    warm_end, end = window
    await asyncio.sleep(max(0, warm_end - time.time()))
    meter.start()
    cpu_window0 = time.process_time()
    sampler = asyncio.create_task(sample_connections(args.database_url, end, result))
    await asyncio.sleep(max(0, end - time.time()))
    meter.stop()
    await sampler
    result.client_cpu_s = time.process_time() - cpu_window0
    hard_deadline = args.wait * args.max_polls + 30
    _, pending = await asyncio.wait(tasks, timeout=hard_deadline)
    for task in pending:
        task.cancel()
        error("client loop cancelled at the deadline")
    return result


# --- Setup and analysis --------------------------------------------------------------------


def ensure_database(database_url: str, fresh: bool) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            if "bench" not in name:
                raise SystemExit(f"--fresh drops only bench databases, not {name!r}")
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def vacuum(database_url: str) -> None:
    """Start from the state autovacuum keeps a production database in. This machine's
    PostgreSQL runs with autovacuum off, so the dead rows of earlier runs would pile up
    in the bench database (one per status change of every turn) and slow every run after."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


PREPARE_USERS = """
import json
from django.contrib.auth import get_user_model
from access.services import api_key_create
keys = []
for i in range({count}):
    user, _ = get_user_model().objects.get_or_create(username=f"{prefix}-{{i:03d}}")
    keys.append(api_key_create(user=user, name="bench")[1])
print(json.dumps(keys))
"""


def prepare(env: dict, args) -> list[str]:
    """Migrate, load the demo agent, and give every client loop its own user and a fresh
    API key (one customer per conversation: the per-user throttle and its history in the
    cache are what 50 customers would have, not one user's 50-fold)."""
    ensure_database(env["DATABASE_URL"], args.fresh)
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo_data")
    vacuum(env["DATABASE_URL"])
    script = PREPARE_USERS.format(count=args.conversations + 1, prefix=BENCH_USER)
    return json.loads(manage(env, "shell", "-c", script, capture=True).splitlines()[-1])


def flush_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def wait_http(port: int, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://{HOST}:{port}/health/", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the web server did not answer /health/ within {timeout} s")


async def probe_turn(args, port: int, api_key: str, timeout: float = 90) -> None:
    """One turn end to end, so the workers are up before the clock starts."""
    client = RawClient(port, api_key)
    try:
        status, conv = await client.request("POST", "/api/v1/conversations/", {})
        assert status == 201, (status, conv)
        status, turn = await client.request(
            "POST", f"/api/v1/conversations/{conv['id']}/turns/", {"text": "Hello?"}
        )
        assert status == 202, (status, turn)
        deadline = time.monotonic() + timeout
        while turn["status"] in ("queued", "processing"):
            if time.monotonic() > deadline:
                raise RuntimeError("the probe turn did not finish: is the Celery worker up?")
            status, turn = await client.request(
                "GET",
                f"/api/v1/conversations/{conv['id']}/turns/{turn['number']}/?wait=5",
            )
        assert turn["status"] == "completed", turn
    finally:
        await client.close()


def read_turns(database_url: str, conversations: list[str]) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            """
            SELECT conversation_id::text AS conversation, number, status, attempt,
                   extract(epoch FROM created_at) AS created,
                   extract(epoch FROM started_at) AS started,
                   extract(epoch FROM completed_at) AS completed,
                   model_ms, latency_ms, ttft_ms, echo IS NOT NULL AS echoed
            FROM conversations_turn WHERE conversation_id = ANY(%s::uuid[])
            """,
            [conversations],
        ).fetchall()


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean": statistics.fmean(values) if values else None,
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
    }


def analyse(args, load: LoadResult, turns: list[dict], window: tuple[float, float], meter):
    start, end = window
    duration = end - start
    rows = {(t["conversation"], t["number"]): t for t in turns}
    measured = [s for s in load.samples if start <= s.submitted < end]
    completed_in_window = [
        t for t in turns if t["status"] == "completed" and start <= float(t["completed"]) < end
    ]
    overhead, queue, execute, model, total = [], [], [], [], []
    for s in measured:
        t = rows.get((s.conversation, s.number))
        if not t or t["status"] != "completed":
            continue
        created, started, completed = (float(t[k]) for k in ("created", "started", "completed"))
        model_ms = t["model_ms"] or 0
        total.append((completed - created) * 1000)
        overhead.append((completed - created) * 1000 - model_ms)
        queue.append((started - created) * 1000)
        execute.append((completed - started) * 1000 - model_ms)
        model.append(model_ms)
    statuses: dict[str, int] = {}
    for t in turns:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    cpu = dict(meter.used)
    capacity = cpu.pop("machine capacity")
    busy = cpu.pop("machine busy")
    cpu["bench client"] = load.client_cpu_s
    # Whatever else ran on the machine meanwhile (other users, the kernel, py-spy ...).
    cpu["other"] = max(0.0, busy - sum(cpu.values()))
    return {
        "config": {
            "web_workers": args.web_workers,
            "celery_procs": args.celery_procs,
            "celery_concurrency": args.celery_concurrency,
            "conversations": args.conversations,
            "rate": args.rate or "closed loop",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "client": args.client,
            "prefer_wait": args.prefer_wait,
            "debug": args.debug,
            "web_conn_max_age": args.web_conn_max_age,
            "beat": args.beat,
            "prometheus_multiproc": args.prometheus_multiproc,
        },
        "throughput_turns_per_s": len(completed_in_window) / duration,
        "turns_completed_in_window": len(completed_in_window),
        "turns_measured": len(measured),
        "turn_statuses": statuses,
        "retried_attempts": sum(1 for t in turns if (t["attempt"] or 0) > 1),
        "echo_flagged": sum(1 for t in turns if t["echoed"]),
        "errors": load.errors,
        "overhead_ms": summary(overhead),
        "queue_ms": summary(queue),
        "execute_minus_model_ms": summary(execute),
        "model_ms": summary(model),
        "server_total_ms": summary(total),
        "client_post_ms": summary([s.post_ms for s in measured]),
        "client_submit_to_completed_ms": summary(
            [s.done_ms for s in measured if s.status == "completed"]
        ),
        "client_polls_per_turn": statistics.fmean([s.polls for s in measured]) if measured else 0,
        "cpu_seconds_in_window": cpu,
        "cpu_busy_seconds": busy,
        "db_connections_max": max(load.db_connections, default=None),
        "db_connections_mean": statistics.fmean(load.db_connections)
        if load.db_connections
        else None,
        "cpu_capacity_seconds": capacity,
    }


def args_rate(config: dict) -> float:
    return config["rate"] if isinstance(config["rate"], (int, float)) else 0.0


def fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_report(r: dict) -> None:
    c = r["config"]
    print(
        f"\n== web workers {c['web_workers']}, celery {c['celery_procs']}x"
        f"{c['celery_concurrency']} threads, {c['conversations']} conversations "
        f"({'offered ' + str(c['rate']) + ' turns/s' if args_rate(c) else 'closed loop'}), "
        f"{c['duration_s']} s (+{c['warmup_s']} s warm-up), client {c['client']}"
        f"{' (Prefer: wait)' if c.get('prefer_wait') else ' (long-poll)'}, "
        f"DEBUG={c['debug']}"
    )
    print(
        f"throughput: {r['throughput_turns_per_s']:.1f} turns/s "
        f"({r['turns_completed_in_window']} completed in the window); statuses "
        f"{r['turn_statuses']}; errors {r['errors'] or 'none'}"
    )
    print(f"{'ms':<34}{'n':>7}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    for key, label in [
        ("overhead_ms", "overhead (total - model_ms)"),
        ("queue_ms", "  queue (created -> started)"),
        ("execute_minus_model_ms", "  run minus model (started -> done)"),
        ("model_ms", "model_ms"),
        ("client_post_ms", "client POST" + (" (waits)" if c.get("prefer_wait") else "")),
        ("client_submit_to_completed_ms", "client submit -> completed"),
    ]:
        s = r[key]
        print(
            f"{label:<34}{s['n']:>7}{fmt(s['mean']):>9}{fmt(s['p50']):>9}{fmt(s['p95']):>9}"
            f"{fmt(s['p99']):>9}{fmt(s['max']):>9}"
        )
    print(
        f"PostgreSQL connections to the bench database: max {r['db_connections_max']}, "
        f"mean {fmt(r['db_connections_mean'])}; GETs per turn {r['client_polls_per_turn']:.2f}"
    )
    cap = r["cpu_capacity_seconds"]
    parts = ", ".join(f"{k} {v / cap * 100:.0f}%" for k, v in r["cpu_seconds_in_window"].items())
    print(f"CPU, share of the machine ({r['cpu_busy_seconds'] / cap * 100:.0f}% busy): {parts}")
    per_turn = {
        k: v / max(1, r["turns_completed_in_window"]) * 1000
        for k, v in r["cpu_seconds_in_window"].items()
        if k != "other"
    }
    print(
        "CPU ms per completed turn: " + ", ".join(f"{k} {v:.2f}" for k, v in per_turn.items() if v)
    )


def run_config(args, base_env: dict, api_keys: list[str], logs: Path) -> dict:
    env = dict(base_env)
    web_env = dict(env)
    if args.web_conn_max_age >= 0:
        web_env["DATABASE_CONN_MAX_AGE"] = str(args.web_conn_max_age)
    flush_redis(env["REDIS_URL"])
    port = args.port or free_port()
    tag = f"w{args.web_workers}-c{args.celery_procs}x{args.celery_concurrency}"
    if args.prometheus_multiproc:
        # As `make run-stack`: every process writes its metrics to files in one directory.
        metrics_dir = logs / f"{tag}-prometheus"
        metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = web_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    web = start(
        [
            str(BIN / "uvicorn"),
            "orchestra_site.asgi:application",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(args.web_workers),
            "--no-access-log",
            "--log-level",
            "warning",
            *args.uvicorn_arg,
        ],
        web_env,
        logs / f"{tag}-web.log",
    )
    workers = [
        start(
            [
                str(BIN / "celery"),
                "-A",
                "orchestra_site",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(args.celery_concurrency),
                "--loglevel",
                "WARNING",
                "-n",
                f"bench{i}@%h",
                *args.celery_arg,
            ],
            env,
            logs / f"{tag}-worker{i}.log",
        )
        for i in range(args.celery_procs)
    ]
    if args.beat:
        start(
            [
                str(BIN / "celery"),
                "-A",
                "orchestra_site",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(logs / f"{tag}-celerybeat-schedule"),
            ],
            env,
            logs / f"{tag}-beat.log",
        )
    try:
        wait_http(port)
        asyncio.run(probe_turn(args, port, api_keys[-1]))
        meter = CpuMeter(
            {
                "web": lambda: process_group_pids(web.pid),
                "celery": lambda: [p for w in workers for p in process_group_pids(w.pid)],
                "postgres": lambda: postgres_pids(env["DATABASE_URL"].rsplit("/", 1)[1]),
                "redis": lambda: pids_named("redis-server"),
            }
        )
        t0 = time.time() + 0.5
        window = (t0 + args.warmup, t0 + args.warmup + args.duration)

        async def go():
            await asyncio.sleep(max(0, t0 - time.time()))
            return await run_load(args, port, api_keys, window, meter)

        load = asyncio.run(go())
        turns = read_turns(env["DATABASE_URL"], load.conversations)
        report = analyse(args, load, turns, window, meter)
        report["logs"] = str(logs)
        return report
    finally:
        _stop_children()


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + (" (modified)" if dirty else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--web-workers", type=ints, default=[2], help="uvicorn --workers (list)")
    parser.add_argument("--celery-procs", type=ints, default=[1], help="Celery worker processes")
    parser.add_argument(
        "--celery-concurrency",
        type=ints,
        default=[16],
        help="threads per Celery worker (list)",
    )
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered load in turns/s over all loops (default 0: closed loop, each loop "
        "submits its next turn as soon as the last one completed: saturation)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--wait", type=int, default=30, help="GET ?wait= seconds (Prefer: wait= with --prefer-wait)"
    )
    parser.add_argument(
        "--prefer-wait",
        action="store_true",
        help="submit with `Prefer: wait=` and take the finished turn from the submission's "
        "answer: one request a turn instead of a submission and a long-poll GET",
    )
    parser.add_argument("--max-polls", type=int, default=2, help="GETs per turn at most")
    parser.add_argument(
        "--no-prometheus-multiproc",
        dest="prometheus_multiproc",
        action="store_false",
        help="do not set PROMETHEUS_MULTIPROC_DIR (make run-stack sets it)",
    )
    parser.add_argument(
        "--no-beat",
        dest="beat",
        action="store_false",
        help="do not run Celery beat (it re-queues turns whose enqueue or worker was lost)",
    )
    parser.add_argument("--max-turns", type=int, default=200_000, help="total turn budget")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--debug", action="store_true", help="DEBUG=1 (the dev default)")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--uvicorn-arg", action="append", default=[], help="extra, repeatable")
    parser.add_argument("--celery-arg", action="append", default=[], help="extra, repeatable")
    parser.add_argument(
        "--env", action="append", default=[], help="extra KEY=VALUE for the processes"
    )
    parser.add_argument(
        "--web-conn-max-age",
        type=int,
        default=0,
        help="DATABASE_CONN_MAX_AGE of the web process only (default 0; -1 keeps the app's "
        "default, with which Django's thread-per-request ASGI handler leaks one PostgreSQL "
        "connection per request until the server runs out: docs/performance.md)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    for url in (args.database_url, args.redis_url):
        if not any(h in url for h in ("@127.0.0.1", "//127.0.0.1", "@localhost", "//localhost")):
            parser.error(f"only local services: {url}")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    env = {
        **os.environ,
        "DJANGO_ENV": "development",
        "DEBUG": "1" if args.debug else "0",
        "LOG_LEVEL": "WARNING",
        "LOCAL_MODEL_TOKEN_DELAY_MS": "0",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "CELERY_BROKER_URL": args.redis_url,
        "PYTHONUNBUFFERED": "1",
        # The processes import the project this script belongs to.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    api_keys = prepare(env, args)
    logs = Path(tempfile.mkdtemp(prefix="orchestra-bench-"))
    print(
        f"bench: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({INTERPRETER}), code {code_version()}; logs in {logs}",
        flush=True,
    )
    reports = []
    configs = itertools.product(args.web_workers, args.celery_procs, args.celery_concurrency)
    for web_workers, celery_procs, concurrency in configs:
        one = argparse.Namespace(**vars(args))
        one.web_workers, one.celery_procs, one.celery_concurrency = (
            web_workers,
            celery_procs,
            concurrency,
        )
        report = run_config(one, env, api_keys, logs)
        print_report(report)
        reports.append(report)
    if len(reports) > 1:
        print("\nweb  celery  turns/s  overhead p50/p95/p99 ms   client p50/p99 ms")
        for r in reports:
            c, o, cl = r["config"], r["overhead_ms"], r["client_submit_to_completed_ms"]
            print(
                f"{c['web_workers']:>3}  {c['celery_procs']}x{c['celery_concurrency']:<4}"
                f"{r['throughput_turns_per_s']:>8.1f}  {fmt(o['p50']):>6}/{fmt(o['p95'])}/"
                f"{fmt(o['p99'])}{'':>6}{fmt(cl['p50'])}/{fmt(cl['p99'])}"
            )
    if args.json:
        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "interpreter": str(INTERPRETER),
            "platform": platform.platform(),
            "code": code_version(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": machine, "runs": reports}, indent=2, default=str)
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
