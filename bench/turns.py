#!/usr/bin/env python
"""Full-stack turn throughput and orchestration overhead (docs/performance.md).

Starts the real processes (uvicorn, a Celery worker and beat) against a dedicated database
and Redis db, drives load over HTTP on 127.0.0.1, then reads the turns back from PostgreSQL:

- sustained throughput: turns completed (Turn.completed_at) inside the measurement window,
  per second;
- orchestration overhead per turn: (completed_at - created_at) - model_ms, from the row;
  its split into queue (created -> started) and execution minus model time;
- client latency: POST submitted -> GET ?wait= answered with the terminal turn.

The model: by default the built-in local model (`--upstream local`), which answers in no
time unless `--env LOCAL_MODEL_TOKEN_DELAY_MS=N` slows it; with `--upstream openai` the
demo agent answers through the `openai` provider from bench/fake_upstream.py, a fake
OpenAI-compatible server started as one more child process, which streams --tokens words
over --answer-seconds: a model that takes time, as real ones do.

Each of the --conversations client loops owns one conversation: POST a turn, GET it with
?wait=30 until it is terminal (with --prefer-wait: POST with `Prefer: wait=30`, whose
answer is the terminal turn), repeat: at once (closed loop: the system runs saturated,
throughput is its capacity) or paced to --rate turns/s in total (overhead below
saturation). Loops run for --warmup + --duration seconds; only turns *submitted* after the
warm-up count for the latency percentiles, and throughput counts completions inside the
window. Bounded: --max-turns in total, and a hard deadline. Also reported: the CPU each
component used per completed turn, and the machine's CPU used by anything else; sampled
every second of the window, the threads and RSS of each web and worker process, Redis's
clients and PostgreSQL's connections; the answers by status code, and client time-outs.

    .venv/bin/python bench/turns.py                          # 2 web workers, a worker per core
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
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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
    """Terminate every process group this script started (and only those): the fake
    upstream last, so that the turns a Celery worker finishes in its warm shutdown do not
    fail for want of their model."""
    last = [proc for proc in _children if proc in _stop_last]
    _stop(proc for proc in _children if proc not in _stop_last)
    _stop(last)
    _children.clear()
    _stop_last.clear()


def _stop(procs) -> None:
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


_stop_last: list[subprocess.Popen] = []


atexit.register(_stop_children)


def _on_signal(signum, _frame):
    _stop_children()
    sys.exit(128 + signum)


def start(cmd: list[str], env: dict, log_path: Path, stop_last: bool = False) -> subprocess.Popen:
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
    if stop_last:
        _stop_last.append(proc)
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


def proc_status(pid: int) -> tuple[int, int] | None:
    """(threads, RSS in kB) of a process, from /proc/<pid>/status; None when it is gone."""
    threads = rss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    threads = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None if threads is None else (threads, rss or 0)


def members(pgids: list[int]) -> dict[int, list[int]]:
    """The processes of each of these process groups, in one pass over /proc."""
    found: dict[int, list[int]] = {pgid: [] for pgid in pgids}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            pgrp = int(stat[stat.rindex(")") + 2 :].split()[2])
            if pgrp in found:
                found[pgrp].append(int(entry))
    return found


def stats_of(values: list[float]) -> dict:
    return {
        "max": max(values) if values else None,
        "mean": statistics.fmean(values) if values else None,
        "n": len(values),
    }


class ResourceSampler(threading.Thread):
    """Once a second until `until`: threads and RSS of every process of the components
    (uvicorn's master and workers, each Celery worker, the fake upstream), Redis's clients,
    PostgreSQL's connections to the bench database, the upstream's open streams.

    A thread of its own, so that a slow sample never holds up the client loops' event loop
    (its CPU counts as the bench client's)."""

    def __init__(self, components: dict, env: dict, upstream_url: str | None, until: float):
        super().__init__(name="resource-sampler", daemon=True)
        self.components = components  # name -> [process group ids]
        self.database_url = env["DATABASE_URL"]
        self.redis_url = env["REDIS_URL"]
        self.upstream_url = upstream_url
        self.until = until
        self.processes: dict[str, dict[str, list[float]]] = {}  # "web worker 123" -> series
        self.series: dict[str, list[float]] = {}
        self.failures: dict[str, str] = {}

    def add(self, key: str, value: float) -> None:
        self.series.setdefault(key, []).append(value)

    def run(self) -> None:
        import psycopg
        import redis

        name = self.database_url.rsplit("/", 1)[1]
        redis_db = redis.Redis.from_url(self.redis_url).connection_pool.connection_kwargs.get(
            "db", 0
        )
        with (
            psycopg.connect(self.database_url, autocommit=True) as conn,
            contextlib.closing(redis.Redis.from_url(self.redis_url)) as r,
        ):
            next_at = time.time()
            while next_at < self.until:
                self.sample(conn, r, name, redis_db)
                next_at += 1
                time.sleep(max(0.0, next_at - time.time()))

    def sample(self, conn, r, database: str, redis_db: int) -> None:
        groups = [g for gs in self.components.values() for g in gs]
        found = members(groups)
        for component, pgids in self.components.items():
            threads_total = rss_total = 0
            for pgid in pgids:
                for pid in sorted(found.get(pgid, [])):
                    status = proc_status(pid)
                    if status is None:
                        continue
                    threads, rss_kb = status
                    if len(found[pgid]) == 1:
                        role = "process"
                    elif pid == pgid:  # uvicorn's master and its workers
                        role = "master"
                    else:
                        role = "worker"
                        with contextlib.suppress(OSError):
                            if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                                role = "resource-tracker"
                    series = self.processes.setdefault(
                        f"{component} {role} {pid}", {"threads": [], "rss_mb": []}
                    )
                    series["threads"].append(threads)
                    series["rss_mb"].append(rss_kb / 1024)
                    threads_total += threads
                    rss_total += rss_kb / 1024
            self.add(f"{component} threads (all its processes)", threads_total)
            self.add(f"{component} RSS MB (all its processes)", rss_total)
        try:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active'),"
                " count(*) FILTER (WHERE state LIKE 'idle in transaction%%')"
                " FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            ).fetchone()
            self.add("postgres connections", row[0])
            self.add("postgres connections active", row[1])
            self.add("postgres connections idle in transaction", row[2])
        except Exception as exc:  # noqa: BLE001 (a missing sample, reported)
            self.failures["postgres"] = repr(exc)[:200]
        try:
            info = r.info("clients")
            self.add("redis connected clients (whole server)", info["connected_clients"])
            self.add("redis blocked clients (whole server)", info.get("blocked_clients", 0))
            clients = r.client_list()
            self.add(
                f"redis clients on db {redis_db}",
                sum(1 for c in clients if str(c.get("db")) == str(redis_db)),
            )
        except Exception as exc:  # noqa: BLE001
            self.failures["redis"] = repr(exc)[:200]
        if self.upstream_url:
            try:
                self.add("upstream streams open", upstream_stats(self.upstream_url)["streams_open"])
            except Exception as exc:  # noqa: BLE001
                self.failures["upstream"] = repr(exc)[:200]

    def report(self) -> dict:
        return {
            "per_process": {
                key: {k: stats_of(v) for k, v in series.items()}
                for key, series in self.processes.items()
            },
            "totals": {key: stats_of(values) for key, values in self.series.items()},
            "sample_failures": self.failures,
        }


def upstream_stats(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats", timeout=5) as answer:
        return json.load(answer)


# --- HTTP client -------------------------------------------------------------------------


class HTTPError(Exception):
    pass


class ClientTimeout(Exception):
    """No answer within the client's time-out (--client-timeout)."""


class RawClient:
    """Keep-alive HTTP/1.1 on one connection; requests one at a time (a client loop).
    It reconnects only when the server closed the connection (or after a time-out)."""

    connections_opened = 0  # over all clients: TCP connections, against requests made
    reopened = 0  # of them, after the server had closed a kept-alive connection

    def __init__(self, port: int, api_key: str, timeout: float | None = None):
        self.port = port
        self.auth = f"Authorization: Bearer {api_key}\r\n"
        self.reader = self.writer = None
        self.timeout = timeout

    async def _connect(self):
        RawClient.connections_opened += 1
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
        try:
            return await asyncio.wait_for(self._exchange(head + payload), self.timeout)
        except TimeoutError:
            await self.close()  # the answer may still come: not on this connection
            raise ClientTimeout(f"{method} answered nothing within {self.timeout} s") from None

    async def _exchange(self, request: bytes):
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    await self._connect()
                self.writer.write(request)
                await self.writer.drain()
                return await self._read_response()
            except (ConnectionError, asyncio.IncompleteReadError, HTTPError):
                # Also a keep-alive connection the server closed while idle: once more.
                await self.close()
                if attempt == 2:
                    raise
                RawClient.reopened += 1
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
    def __init__(self, port: int, api_key: str, timeout: float | None = None):
        import httpx

        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout or 60,
        )

    async def request(
        self, method: str, path: str, body: dict | None = None, headers: dict | None = None
    ):
        import httpx

        try:
            response = await self._client.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ClientTimeout(str(exc)) from None
        except httpx.HTTPError as exc:
            raise HTTPError(f"{type(exc).__name__}: {exc}") from None
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
    # Every answer by request and status code: {"submit": {202: 1234, 503: 2}, ...}
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    client_timeouts: dict[str, int] = field(default_factory=dict)
    client_failures: dict[str, int] = field(default_factory=dict)  # no answer, not a time-out
    requests: int = 0
    connections: int | None = 0  # TCP connections the clients opened
    reopened: int | None = 0  # of them, after the server closed one (idle, or after an error)
    resources: dict = field(default_factory=dict)
    upstream: dict = field(default_factory=dict)


async def run_load(
    args,
    port: int,
    api_keys: list[str],
    window: tuple[float, float],
    meter: CpuMeter,
    sampler: ResourceSampler,
):
    result = LoadResult()
    client_class = HttpxClient if args.client == "httpx" else RawClient
    stop_at = window[1]
    budget = itertools.count()  # shared turn counter: --max-turns bound

    def error(kind: str) -> None:
        result.errors[kind] = result.errors.get(kind, 0) + 1

    async def call(client, kind: str, method: str, path: str, body=None, headers=None):
        """(status, body); (None, "timeout" or "failed") when no answer came, counted."""
        result.requests += 1
        try:
            status, answer = await client.request(method, path, body, headers)
        except ClientTimeout:
            result.client_timeouts[kind] = result.client_timeouts.get(kind, 0) + 1
            error(f"{kind}: client time-out")
            return None, "timeout"
        except (OSError, HTTPError, asyncio.IncompleteReadError, ValueError) as exc:
            result.client_failures[kind] = result.client_failures.get(kind, 0) + 1
            error(f"{kind}: client {type(exc).__name__}: {exc}"[:120])
            return None, "failed"
        codes = result.statuses.setdefault(kind, {})
        codes[status] = codes.get(status, 0) + 1
        return status, answer

    async def loop(index: int):
        client = client_class(port, api_keys[index], args.client_timeout)
        rng = random.Random(index)
        try:
            status, body = await call(
                client, "create", "POST", "/api/v1/conversations/", {"metadata": {"bench": index}}
            )
            if status != 201:
                if status is not None:
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
                status, body = await call(
                    client,
                    "submit",
                    "POST",
                    f"/api/v1/conversations/{conversation}/turns/",
                    {"text": question(rng), "turn_id": uuid.uuid4().hex},
                    submit_headers,
                )
                post_ms = (time.perf_counter() - t0) * 1000
                if status != 202:
                    if status is not None:
                        code = (body or {}).get("error", {}).get("code")
                        error(f"submit {status} {code}")
                    # Back off a little (a client that gave up would not hammer either).
                    await asyncio.sleep(0.05 if status is not None else 0.5)
                    continue
                number, turn_status, polls = body["number"], body["status"], 0
                path = f"/api/v1/conversations/{conversation}/turns/{number}/?wait={args.wait}"
                # Up to --max-polls GETs; one that fails is tried again after a second (a
                # client that has its turn accepted waits for it: it does not send another).
                while turn_status in ("queued", "processing") and polls < args.max_polls:
                    polls += 1
                    status, answer = await call(client, "wait", "GET", path)
                    if status == 200:
                        turn_status = answer["status"]
                        continue
                    if status is not None:
                        error(f"wait {status}")
                    failed = f"client {answer}" if status is None else f"wait {status}"
                    if polls < args.max_polls:
                        await asyncio.sleep(1.0)
                    else:
                        turn_status = failed
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
            error(f"client loop ended: {type(exc).__name__}: {exc}"[:120])
        finally:
            await client.close()

    started = asyncio.Event()
    tasks = [asyncio.create_task(loop(i)) for i in range(args.conversations)]
    # Every loop has its conversation before the clock starts.
    while any(not t.done() for t in tasks) and len(result.conversations) < args.conversations:
        await asyncio.sleep(0.01)
    started.set()
    warm_end, end = window
    await asyncio.sleep(max(0, warm_end - time.time()))
    meter.start()
    upstream_before = upstream_stats(args.upstream_url) if args.upstream_url else {}
    cpu_window0 = time.process_time()
    sampler.start()
    await asyncio.sleep(max(0, end - time.time()))
    meter.stop()
    result.client_cpu_s = time.process_time() - cpu_window0
    if args.upstream_url:
        after = upstream_stats(args.upstream_url)
        result.upstream = {
            k: after[k] - upstream_before[k]
            for k in ("requests", "completed", "disconnected", "bad_requests", "chunks")
        }
        result.upstream["late_s_max"] = after["late_s_max"]
    await asyncio.to_thread(sampler.join, 10)
    result.resources = sampler.report()
    # A turn may wait --wait s in its submission (Prefer: wait) and --wait s in each GET.
    hard_deadline = args.client_timeout * (args.max_polls + 1) + 10
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


PREPARE = """
import json
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from access.models import ApiKey
from agents.models import Agent, AgentModel, LLMModel, Provider
from agents.tools import registered

params = json.loads({params!r})

# One user and a fresh API key per client loop, in a few statements whatever their number
# (SHA-256 digests: no password hasher). Keys of runs over an hour ago go.
User = get_user_model()
names = [f"{{params['prefix']}}-{{i:03d}}" for i in range(params["count"])]
with transaction.atomic():
    have = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create([User(username=n) for n in names if n not in have])
    users = dict(User.objects.filter(username__in=names).values_list("username", "pk"))
    ApiKey.objects.filter(
        user_id__in=users.values(), name="bench", created_at__lt=timezone.now() - timedelta(hours=1)
    ).delete()
    keys, rows = [], []
    for n in names:
        raw = ApiKey.generate()
        row = ApiKey(user_id=users[n], name="bench")
        row.set_key(raw)
        keys.append(raw)
        rows.append(row)
    ApiKey.objects.bulk_create(rows)

# The demo agent's model: the fake upstream first in its chain (and no tools: one model
# call a turn), or, with the local model, the chain and tools load_demo_data gives it.
agent = Agent.objects.get(slug="support")
with transaction.atomic():
    if params["upstream"] == "openai":
        provider, _ = Provider.objects.update_or_create(
            name=params["provider"],
            defaults={{"kind": "openai", "base_url": params["base_url"], "is_active": True}},
        )
        model, _ = LLMModel.objects.update_or_create(
            name=params["model"],
            defaults={{"provider": provider, "is_active": True, "supports_tools": False}},
        )
        others = list(agent.chain_links.exclude(model=model).order_by("position", "pk"))
        AgentModel.objects.update_or_create(agent=agent, model=model, defaults={{"position": 0}})
        for position, link in enumerate(others, 1):
            AgentModel.objects.filter(pk=link.pk).update(position=position)
        agent.tools = []
    else:
        AgentModel.objects.filter(agent=agent, model__name=params["model"]).delete()
        for position, link in enumerate(agent.chain_links.order_by("position", "pk")):
            AgentModel.objects.filter(pk=link.pk).update(position=position)
        if not agent.tools:  # emptied by an --upstream openai run: as agents/demo.py has it
            agent.tools = [name for name in registered() if name != "transfer_to_agent"]
    agent.save()
chain = [str(link.model) for link in agent.chain_links.order_by("position")]
print(json.dumps({{"keys": keys, "chain": chain, "tools": len(agent.tools)}}))
"""
BENCH_PROVIDER, BENCH_MODEL = "bench-fake-upstream", "bench-fake-model"


def prepare(env: dict, args) -> list[str]:
    """Migrate, load the demo agent, point it at the model of this run, and give every
    client loop its own user and a fresh API key (one customer per conversation: the
    per-user throttle and its history in the cache are what 50 customers would have, not
    one user's 50-fold). One `manage.py shell` for all of it: 1000 loops take seconds."""
    ensure_database(env["DATABASE_URL"], args.fresh)
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo_data")
    vacuum(env["DATABASE_URL"])
    params = {
        "count": args.conversations + 1,
        "prefix": BENCH_USER,
        "upstream": args.upstream,
        "provider": BENCH_PROVIDER,
        "model": BENCH_MODEL,
        "base_url": f"{args.upstream_url}/v1" if args.upstream_url else "",
    }
    t0 = time.perf_counter()
    script = PREPARE.format(params=json.dumps(params))
    out = json.loads(manage(env, "shell", "-c", script, capture=True).splitlines()[-1])
    print(
        f"prepared {len(out['keys'])} users and API keys in {time.perf_counter() - t0:.1f} s; "
        f"agent support: model chain {out['chain']}, {out['tools']} tools",
        flush=True,
    )
    return out["keys"]


def abandon_pending_turns(database_url: str) -> int:
    """Cancel the turns an earlier run left queued or processing (its enqueue failed, or it
    ended before they did): Celery beat's recovery would otherwise run them again in this
    run, on top of its own load. The bench database only."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            """
            UPDATE conversations_turn
            SET status = 'cancelled', error_code = 'bench_abandoned', lease_expires_at = NULL
            WHERE status IN ('queued', 'processing')
            """
        ).rowcount


def flush_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def wait_http(port: int, path: str = "/health/", timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} did not answer {path} within {timeout} s")


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


def read_turns(database_url: str, conversations: list[str]) -> tuple[list[dict], dict]:
    """The turns of these conversations, each with its model calls (TurnStep rows): how
    many, how many failed, and which models answered; and the commonest step errors."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        turns = conn.execute(
            """
            SELECT t.conversation_id::text AS conversation, t.number, t.status, t.attempt,
                   extract(epoch FROM t.created_at) AS created,
                   extract(epoch FROM t.started_at) AS started,
                   extract(epoch FROM t.completed_at) AS completed,
                   t.model_ms, t.latency_ms, t.ttft_ms, t.echo IS NOT NULL AS echoed,
                   t.error_code, s.model_calls, s.model_errors, s.models
            FROM conversations_turn t
            LEFT JOIN LATERAL (
                SELECT count(*) AS model_calls,
                       count(*) FILTER (WHERE error <> '') AS model_errors,
                       array_agg(DISTINCT name) FILTER (WHERE error = '') AS models
                FROM conversations_turnstep WHERE turn_id = t.id AND kind = 'model_call'
            ) s ON true
            WHERE t.conversation_id = ANY(%s::uuid[])
            """,
            [conversations],
        ).fetchall()
        step_errors = conn.execute(
            """
            SELECT left(s.error, 160) AS error, count(*) AS n
            FROM conversations_turnstep s JOIN conversations_turn t ON t.id = s.turn_id
            WHERE t.conversation_id = ANY(%s::uuid[]) AND s.error <> ''
            GROUP BY 1 ORDER BY 2 DESC LIMIT 5
            """,
            [conversations],
        ).fetchall()
    return turns, {row["error"]: row["n"] for row in step_errors}


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
        "p90": pct(values, 90),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
    }


def analyse(
    args,
    load: LoadResult,
    turns: list[dict],
    step_errors: dict,
    window: tuple[float, float],
    meter,
):
    start, end = window
    duration = end - start
    rows = {(t["conversation"], t["number"]): t for t in turns}
    measured = [s for s in load.samples if start <= s.submitted < end]
    completed_in_window = [
        t for t in turns if t["status"] == "completed" and start <= float(t["completed"]) < end
    ]
    overhead, queue, execute, model, total = [], [], [], [], []
    measured_status: dict[str, int] = {}  # the client's last view of each measured turn
    model_calls, other_model = [], 0
    for s in measured:
        measured_status[s.status] = measured_status.get(s.status, 0) + 1
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
        model_calls.append(t["model_calls"] or 0)
        if args.upstream == "openai" and BENCH_MODEL not in (t["models"] or ()):
            other_model += 1  # a fallback of the chain answered: not the upstream measured
    statuses: dict[str, int] = {}
    error_codes: dict[str, int] = {}
    for t in turns:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
        if t["error_code"]:
            error_codes[t["error_code"]] = error_codes.get(t["error_code"], 0) + 1
    cpu = dict(meter.used)
    capacity = cpu.pop("machine capacity")
    busy = cpu.pop("machine busy")
    cpu["bench client"] = load.client_cpu_s
    # Whatever else ran on the machine meanwhile (other users, the kernel, py-spy ...).
    cpu["other"] = max(0.0, busy - sum(cpu.values()))
    http = {kind: dict(sorted(codes.items())) for kind, codes in load.statuses.items()}
    count = lambda test: sum(  # noqa: E731
        n for codes in load.statuses.values() for status, n in codes.items() if test(status)
    )
    resources = load.resources
    pg = resources.get("totals", {}).get("postgres connections", {})
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
            "client_timeout_s": args.client_timeout,
            "prefer_wait": args.prefer_wait,
            "debug": args.debug,
            "web_conn_max_age": args.web_conn_max_age,
            "beat": args.beat,
            "prometheus_multiproc": args.prometheus_multiproc,
            "upstream": args.upstream,
            "tokens": args.tokens if args.upstream == "openai" else None,
            "answer_seconds": args.answer_seconds if args.upstream == "openai" else None,
            "local_model_token_delay_ms": args.local_token_delay_ms,
        },
        "conversations_created": len(load.conversations),
        "throughput_turns_per_s": len(completed_in_window) / duration,
        "turns_completed_in_window": len(completed_in_window),
        "turns_measured": len(measured),
        "turns_measured_by_client_status": measured_status,
        "turn_statuses": statuses,
        "turn_error_codes": error_codes,
        "model_step_errors": step_errors,
        "model_calls_per_turn": statistics.fmean(model_calls) if model_calls else None,
        "turns_answered_by_another_model": other_model,
        "retried_attempts": sum(1 for t in turns if (t["attempt"] or 0) > 1),
        "echo_flagged": sum(1 for t in turns if t["echoed"]),
        "errors": load.errors,
        "http_statuses": http,
        "http_4xx": count(lambda status: 400 <= status < 500),
        "http_5xx": count(lambda status: status >= 500),
        "client_timeouts": load.client_timeouts,
        "client_no_answer": load.client_failures,
        "client_requests": load.requests,
        "client_tcp_connections": load.connections,
        "client_tcp_reopened_after_server_close": load.reopened,
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
        "db_connections_max": pg.get("max"),
        "db_connections_mean": pg.get("mean"),
        "resources": resources,
        "upstream": load.upstream,
        "cpu_capacity_seconds": capacity,
    }


def args_rate(config: dict) -> float:
    return config["rate"] if isinstance(config["rate"], (int, float)) else 0.0


def fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_report(r: dict) -> None:
    c = r["config"]
    if c["upstream"] == "openai":
        model = f"fake OpenAI upstream, {c['tokens']} tokens over {c['answer_seconds']} s"
    else:
        model = f"local model, {c['local_model_token_delay_ms']} ms a word"
    print(
        f"\n== web workers {c['web_workers']}, celery {c['celery_procs']}x"
        f"{c['celery_concurrency']} threads, {c['conversations']} conversations "
        f"({'offered ' + str(c['rate']) + ' turns/s' if args_rate(c) else 'closed loop'}), "
        f"{c['duration_s']} s (+{c['warmup_s']} s warm-up), client {c['client']}"
        f"{' (Prefer: wait)' if c.get('prefer_wait') else ' (long-poll)'}, "
        f"DEBUG={c['debug']}; {model}"
    )
    codes = r["turn_error_codes"]
    print(
        f"throughput: {r['throughput_turns_per_s']:.1f} turns/s "
        f"({r['turns_completed_in_window']} completed in the window); statuses "
        f"{r['turn_statuses']}" + (f"; error codes {codes}" if codes else "")
    )
    if r["conversations_created"] < c["conversations"]:
        print(f"only {r['conversations_created']} conversations could be created")
    print(
        f"turns submitted in the window: {r['turns_measured']}, as the client last saw them "
        f"{r['turns_measured_by_client_status'] or '-'}; model calls per completed turn "
        f"{fmt(r['model_calls_per_turn'], 2)}"
        + (
            f", answered by another model of the chain {r['turns_answered_by_another_model']}"
            if c["upstream"] == "openai"
            else ""
        )
    )
    if r["model_step_errors"]:
        print(f"model call errors: {r['model_step_errors']}")
    print(
        f"{'ms, turns submitted in the window':<36}{'n':>7}{'mean':>9}{'p50':>9}{'p90':>9}"
        f"{'p99':>9}{'max':>9}"
    )
    for key, label in [
        ("queue_ms", "queue wait (created -> started)"),
        ("model_ms", "model time (model_ms)"),
        ("overhead_ms", "overhead (total - model_ms)"),
        ("execute_minus_model_ms", "  of it: run minus model"),
        ("server_total_ms", "total (created -> completed)"),
        ("client_post_ms", "client POST" + (" (waits)" if c.get("prefer_wait") else "")),
        ("client_submit_to_completed_ms", "client submit -> completed"),
    ]:
        s = r[key]
        print(
            f"{label:<36}{s['n']:>7}{fmt(s['mean']):>9}{fmt(s['p50']):>9}{fmt(s['p90']):>9}"
            f"{fmt(s['p99']):>9}{fmt(s['max']):>9}"
        )
    http = "; ".join(f"{kind} {codes}" for kind, codes in r["http_statuses"].items())
    print(f"answers by status code (whole run): {http or '-'}")
    print(
        f"errors: 5xx {r['http_5xx']}, 4xx {r['http_4xx']}, client time-outs "
        f"{r['client_timeouts'] or 0}, no answer {r['client_no_answer'] or 0}; "
        f"{r['client_requests']} requests over {r['client_tcp_connections']} TCP connections "
        f"({r['client_tcp_reopened_after_server_close']} after the server closed one); "
        f"GETs per turn {r['client_polls_per_turn']:.2f}"
    )
    if r["errors"]:
        print(f"error detail: {r['errors']}")
    res = r["resources"]
    print("sampled every second of the window, peak / mean:")
    for key, series in res.get("per_process", {}).items():
        t, m = series["threads"], series["rss_mb"]
        print(
            f"  {key:<26} threads {t['max']:>4} / {fmt(t['mean']):>6}   "
            f"RSS {fmt(m['max'], 0):>5} / {fmt(m['mean'], 0):>5} MB"
        )
    for key, s in res.get("totals", {}).items():
        print(f"  {key:<50} {fmt(s['max'], 0):>6} / {fmt(s['mean'])}")
    if res.get("sample_failures"):
        print(f"  sampling failed: {res['sample_failures']}")
    if r["upstream"]:
        u = r["upstream"]
        print(
            f"upstream in the window: {u['requests']} requests, {u['completed']} streams "
            f"completed, {u['disconnected']} cut off by the client; a word at most "
            f"{u['late_s_max'] * 1000:.0f} ms late"
        )
    for process, events in r.get("log_events", {}).items():
        for event, n in events.items():
            print(f"log {process}: {n} x {event}")
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
    if abandoned := abandon_pending_turns(env["DATABASE_URL"]):
        print(f"cancelled {abandoned} turns an earlier run left queued or processing", flush=True)
    port = args.port or free_port()
    tag = f"w{args.web_workers}-c{args.celery_procs}x{args.celery_concurrency}"
    upstream = None
    if args.upstream == "openai":
        upstream = start(
            [
                sys.executable,
                str(ROOT / "bench" / "fake_upstream.py"),
                "--port",
                str(args.upstream_port),
                "--tokens",
                str(args.tokens),
                "--answer-seconds",
                str(args.answer_seconds),
            ],
            env,
            logs / f"{tag}-upstream.log",
            stop_last=True,
        )
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
                args.celery_pool,
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
        if upstream is not None:
            wait_http(args.upstream_port, "/stats")
        wait_http(port)
        asyncio.run(probe_turn(args, port, api_keys[-1]))
        groups = {
            "web": lambda: process_group_pids(web.pid),
            "celery": lambda: [p for w in workers for p in process_group_pids(w.pid)],
            "postgres": lambda: postgres_pids(env["DATABASE_URL"].rsplit("/", 1)[1]),
            "redis": lambda: pids_named("redis-server"),
        }
        components = {"web": [web.pid], "celery": [w.pid for w in workers]}
        if upstream is not None:
            groups["upstream"] = lambda: process_group_pids(upstream.pid)
            components["upstream"] = [upstream.pid]
        meter = CpuMeter(groups)
        t0 = time.time() + 0.5
        window = (t0 + args.warmup, t0 + args.warmup + args.duration)
        sampler = ResourceSampler(components, env, args.upstream_url, window[1])

        async def go():
            await asyncio.sleep(max(0, t0 - time.time()))
            return await run_load(args, port, api_keys, window, meter, sampler)

        RawClient.connections_opened = RawClient.reopened = 0
        load = asyncio.run(go())
        load.connections = RawClient.connections_opened if args.client == "raw" else None
        load.reopened = RawClient.reopened if args.client == "raw" else None
        turns, step_errors = read_turns(env["DATABASE_URL"], load.conversations)
        report = analyse(args, load, turns, step_errors, window, meter)
        report["logs"] = str(logs)
    finally:
        _stop_children()
    report["log_events"] = {
        path.name.removeprefix(f"{tag}-").removesuffix(".log"): log_events(path)
        for path in sorted(logs.glob(f"{tag}-*.log"))
    }
    return report


def log_events(path: Path, top: int = 5) -> dict[str, int]:
    """The commonest warnings and errors a process logged (the project logs JSON lines):
    event, and the last line of the exception if any, with how many times."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") not in ("warning", "error", "critical"):
                continue
            key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "…", str(entry.get("event")))
            key = re.sub(r"/\d+/", "/N/", key)[:100]
            if entry.get("kind"):
                key += f" ({entry['kind']})"
            if exception := (entry.get("exception") or "").strip():
                key += ": " + exception.splitlines()[-1][:160]
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


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
    parser.add_argument(
        "--celery-procs",
        type=ints,
        default=[os.cpu_count() or 2],
        help="Celery worker processes (list); make run-stack runs one per core",
    )
    parser.add_argument(
        "--celery-pool",
        choices=["prefork", "threads"],
        default="threads",
        help="threads, as make run-stack (prefork closes the database pool after each task)",
    )
    parser.add_argument(
        "--celery-concurrency",
        type=ints,
        default=[4],
        help="Celery's --concurrency: threads (or processes) per worker (list)",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=50,
        help="client loops, one conversation each (1000 and more: one asyncio loop, one "
        "keep-alive connection each)",
    )
    parser.add_argument(
        "--upstream",
        choices=["local", "openai"],
        default="local",
        help="local: the built-in local model (answers at once; to make it take time, "
        "--env LOCAL_MODEL_TOKEN_DELAY_MS=N sleeps N ms a word in the worker: its answers "
        "are about 65 words, so 30 ms is about 2 s). openai: the demo agent answers through "
        "the openai provider from bench/fake_upstream.py, started as a child process",
    )
    parser.add_argument(
        "--tokens", type=int, help="--upstream openai: words (chunks) per answer (default 40)"
    )
    parser.add_argument(
        "--answer-seconds",
        type=float,
        help="--upstream openai: seconds over which each answer streams (default 2.0; 0: as "
        "fast as possible). With --upstream local use --env LOCAL_MODEL_TOKEN_DELAY_MS=",
    )
    parser.add_argument("--upstream-port", type=int, default=0, help="default: a free port")
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
        "--client-timeout",
        type=float,
        help="seconds the client waits for an answer before it gives up on the request and "
        "counts a time-out (default --wait + 15)",
    )
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
    if args.upstream == "local" and (args.tokens is not None or args.answer_seconds is not None):
        parser.error(
            "--tokens and --answer-seconds are for --upstream openai; the local model takes "
            "time with --env LOCAL_MODEL_TOKEN_DELAY_MS=N (N ms a word, about 65 words)"
        )
    args.tokens = 40 if args.tokens is None else args.tokens
    args.answer_seconds = 2.0 if args.answer_seconds is None else args.answer_seconds
    if args.client_timeout is None:
        args.client_timeout = args.wait + 15.0
    if args.upstream == "openai":
        args.upstream_port = args.upstream_port or free_port()
        args.upstream_url = f"http://{HOST}:{args.upstream_port}"
    else:
        args.upstream_url = None
    # A connection per client loop, and as many on the servers' side (they inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < 2 * args.conversations + 200:
        print(f"warning: RLIMIT_NOFILE {hard} is low for {args.conversations} conversations")

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
    args.local_token_delay_ms = float(env["LOCAL_MODEL_TOKEN_DELAY_MS"] or 0)
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
