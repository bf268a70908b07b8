#!/usr/bin/env python
"""CPU and SQL statements of one turn's three parts, in one process, without servers.

    .venv/bin/python bench/turn_inprocess.py            # 100 turns after 10 of warm-up
    .venv/bin/python bench/turn_inprocess.py --turns 300 --profile drain

Per turn: `POST …/turns/` through Django's test client, the worker's drain of the
conversation run inline (the Celery hand-off left out), then `GET …/turns/{n}/?wait=5`.
The questions are bench/turns.py's, from a fixed seed: the same mix of tools every run.
Uses the bench database and Redis db of bench/turns.py (run that once first). `--profile
PART` prints a cProfile of that part (post, drain or get), sorted by cumulative time.
"""

import argparse
import cProfile
import os
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import turns as bench  # the bench's defaults

PARTS = ("post", "drain", "get")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--profile", choices=PARTS)
    parser.add_argument("--database-url", default=bench.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=bench.DEFAULT_REDIS_URL)
    args = parser.parse_args()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "orchestra_site.settings",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "ALLOWED_HOSTS": "testserver",  # the test client's host
            "LOCAL_MODEL_TOKEN_DELAY_MS": "0",
        }
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from access.services import api_key_create
    from conversations import services
    from conversations.execution import drain_conversation

    services._enqueue = lambda conversation_id: None  # the drain runs inline below

    user, _ = get_user_model().objects.get_or_create(username="turn-inprocess")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=user, name='bench')[1]}")
    conversation = client.post("/api/v1/conversations/", {}, "application/json").json()["id"]
    turns = f"/api/v1/conversations/{conversation}/turns/"
    cpu = dict.fromkeys(PARTS, 0.0)
    statements = dict.fromkeys(PARTS, 0)
    profile = cProfile.Profile(time.process_time)  # CPU time, not waiting

    def part(name, call, *call_args):
        with CaptureQueriesContext(connection) as queries:
            if name == args.profile:
                profile.enable()
            started = time.process_time()
            result = call(*call_args)
            cpu[name] += time.process_time() - started
            if name == args.profile:
                profile.disable()
        statements[name] += len(queries)
        return result

    warmup = 10
    rng = random.Random(7)
    for index in range(warmup + args.turns):
        if index == warmup:
            cpu, statements = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0)
            profile = cProfile.Profile(time.process_time)  # CPU time, not waiting
        text = bench.question(rng)
        answer = part("post", client.post, turns, {"text": text}, "application/json")
        number = answer.json()["number"]
        part("drain", drain_conversation, conversation)
        answer = part("get", client.get, f"{turns}{number}/?wait=5")
        assert answer.json()["status"] == "completed", answer.json()

    for name in PARTS:
        print(
            f"{name}: {1000 * cpu[name] / args.turns:.2f} ms CPU, "
            f"{statements[name] / args.turns:.1f} SQL statements per turn"
        )
    print(f"total: {1000 * sum(cpu.values()) / args.turns:.2f} ms CPU per turn")
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
