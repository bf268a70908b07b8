#!/usr/bin/env python
"""CPU a Celery worker spends per task on the hand-off alone: a task that does nothing.

    .venv/bin/python bench/celery_task.py                      # the project's settings
    .venv/bin/python bench/celery_task.py --ack-emulation      # with the emulated acks

Queues --tasks no-op tasks on a Redis db of their own, then starts a worker with the
project's Celery settings (thread pool, --concurrency 16, late acknowledgements,
prefetch 1) and measures its CPU (user + system) until the queue is empty, less what an
idle worker of the same kind uses in as long. `--ack-emulation` turns the Redis
transport's emulated acknowledgements back on (docs/performance.md).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turns import cpu_seconds  # the bench's reading of /proc

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_CELERY_REDIS_URL", "redis://127.0.0.1:6379/8")


def make_app() -> Celery:
    """A Celery app with the project's CELERY_* settings and one task that does nothing."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")
    os.environ.setdefault("REDIS_URL", REDIS_URL)
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orchestra_bench")
    sys.path.insert(0, str(ROOT))
    from django.conf import settings

    app = Celery("bench-celery-task")
    app.config_from_object(settings, namespace="CELERY")
    options = dict(app.conf.broker_transport_options or {})
    if os.environ.get("BENCH_ACK_EMULATION") == "1":
        options.pop("ack_emulation", None)  # kombu's default: on
    app.conf.update(broker_url=REDIS_URL, broker_transport_options=options)
    app.task(name="noop", ignore_result=True)(noop)
    return app


def noop(payload: str) -> None:
    """The task: nothing, so that what the worker spends is the hand-off."""


app = make_app()


def worker(env: dict) -> subprocess.Popen:
    command = [
        *(str(Path(sys.executable).parent / "celery"), "-A", "celery_task:app", "worker"),
        *("--pool", "threads", "--concurrency", "16", "-l", "WARNING"),
        *("--without-mingle", "--without-gossip", "--without-heartbeat"),
    ]
    return subprocess.Popen(
        command,
        cwd=Path(__file__).parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--ack-emulation", action="store_true")
    args = parser.parse_args()
    env = dict(os.environ, BENCH_ACK_EMULATION="1" if args.ack_emulation else "0")
    broker = redis.Redis.from_url(REDIS_URL)

    broker.flushdb()
    idle = worker(env)
    time.sleep(1)  # started
    idle_cpu, started = cpu_seconds([idle.pid]), time.monotonic()
    time.sleep(3)
    idle_rate = (cpu_seconds([idle.pid]) - idle_cpu) / (time.monotonic() - started)
    idle.terminate()
    idle.wait(30)

    broker.flushdb()
    noop = app.tasks["noop"]
    for _ in range(args.tasks):
        noop.delay("x" * 36)  # a conversation id's length
    busy = worker(env)
    try:
        while broker.llen("celery") == args.tasks:  # until it has started taking them
            time.sleep(0.01)
        remaining = broker.llen("celery")
        before, started = cpu_seconds([busy.pid]), time.monotonic()
        while broker.llen("celery"):
            time.sleep(0.05)
        time.sleep(0.5)  # the last ones run
        used = cpu_seconds([busy.pid]) - before - idle_rate * (time.monotonic() - started)
    finally:
        busy.terminate()
        busy.wait(30)
        broker.flushdb()
    print(
        f"ack emulation {'on' if args.ack_emulation else 'off'}: worker CPU "
        f"{1000 * used / remaining:.3f} ms per task ({remaining} tasks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
