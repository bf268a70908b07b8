"""The collector's tuning for long-running processes (orchestra_site/gc_tuning.py)."""

import gc

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
