"""The collector's tuning for long-running processes (orchestra_site/gc_tuning.py)."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.signals import worker_ready

from orchestra_site.gc_tuning import YOUNG_THRESHOLD, freeze_startup_objects


@pytest.fixture
def default_collector():
    """CPython's defaults, restored afterwards (the test process may have been frozen
    already by importing orchestra_site.asgi)."""
    previous = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.set_threshold(*previous)


def _tracked(obj) -> bool:
    return any(tracked is obj for tracked in gc.get_objects())


def test_objects_alive_at_start_up_leave_the_collections_and_young_ones_collect_less_often(
    default_collector,
):
    kept = ["made at start-up"]
    assert _tracked(kept)

    freeze_startup_objects()

    assert not _tracked(kept)
    assert gc.get_freeze_count() > 0
    made_later = ["made per request"]
    assert _tracked(made_later)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10) == (50_000, 10, 10)


def test_a_frozen_process_still_collects_the_cycles_it_makes_later(default_collector):
    freeze_startup_objects()

    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle only the collector frees
    del first, second
    assert gc.collect() >= 2


def test_the_celery_worker_freezes_once_it_is_ready(default_collector):
    kept = ["made while the worker started"]
    assert _tracked(kept)

    worker_ready.send(sender=None)

    assert not _tracked(kept)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


SERVER_START = """
import asyncio, gc, json
from orchestra_site.asgi import application

imported = gc.get_freeze_count()
messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
sent = []

async def receive():
    return messages.pop(0)

async def send(message):
    sent.append(message["type"])

asyncio.run(application({"type": "lifespan"}, receive, send))
print(json.dumps([imported, gc.get_freeze_count() > 0, gc.get_threshold()[0], sent]))
"""


def test_a_web_process_freezes_when_its_server_starts_not_when_the_app_is_imported():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchestra_site.settings",
        "TURN_EXECUTOR": "celery",  # no in-process workers in this short-lived process
    }
    out = subprocess.run(
        [sys.executable, "-c", SERVER_START],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert json.loads(out.stdout.splitlines()[-1]) == [
        0,
        True,
        YOUNG_THRESHOLD,
        ["lifespan.startup.complete", "lifespan.shutdown.complete"],
    ]
