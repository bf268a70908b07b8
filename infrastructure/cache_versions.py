"""Versions in the shared cache that tell each process when its copy of some rows is stale.

A process keeps rows it reads on every request or turn (routing rules, API keys) and
compares one version per use instead of querying. A save or delete of a watched model sets
a new version at once and again at commit, so a process that reloaded in between reloads
once more. Another process sees a change within READ_EVERY_S; the process that made it, at
once.

A lost version (Redis unreachable when it was set) cannot keep a copy forever: the token
also changes every MAX_AGE_S, and every MAX_AGE_UNSHARED_S without a cache shared between
processes (the embedded mode, where a `manage.py` command's version stays in its own).
"""

import threading
import time
import uuid

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

log = structlog.get_logger("orchestra.versions")

MAX_AGE_S = 30
MAX_AGE_UNSHARED_S = 1
READ_EVERY_S = 0.1
_all: list["SharedVersion"] = []


def forget_reads() -> None:
    """Read every shared version anew at its next use (after the cache was cleared)."""
    for version in _all:
        with version._mutex:
            version._generation += 1
            version._last_read = None


class SharedVersion:
    def __init__(self, key: str):
        self.key = key
        self._last_read: tuple[float, str] | None = None  # (when, version)
        self._generation = 0  # versions this process has set (and forgotten reads)
        self._mutex = threading.Lock()  # around the two fields, never around Redis
        _all.append(self)

    def current(self) -> str:
        """A token that changes when the rows change, and at least every MAX_AGE_S
        (MAX_AGE_UNSHARED_S when the cache is this process's own)."""
        now = time.time()
        last_read = self._last_read
        if last_read is None or not 0 <= now - last_read[0] < READ_EVERY_S:
            generation = self._generation
            last_read = (now, self._read())
            with self._mutex:
                if generation == self._generation:  # no new version set here meanwhile
                    self._last_read = last_read
        max_age = MAX_AGE_S if settings.REDIS_URL else MAX_AGE_UNSHARED_S
        return f"{last_read[1]}:{int(now // max_age)}"

    def _read(self) -> str:
        version = cache.get(self.key)
        if version is None:  # first use, or the cache was flushed: start a version
            cache.add(self.key, uuid.uuid4().hex, timeout=None)
            version = cache.get(self.key)
        return version

    def bump(self, using: str | None = None) -> None:
        """A new version now and once the current transaction (if any) has committed."""
        self._set_new()
        transaction.on_commit(self._set_new, using=using, robust=True)

    def watch(self, *models) -> None:
        for model in models:
            uid = f"{self.key}:{model._meta.label}"
            post_save.connect(self._changed, sender=model, dispatch_uid=uid + ":save")
            post_delete.connect(self._changed, sender=model, dispatch_uid=uid + ":delete")

    def _changed(self, sender, using=None, **kwargs) -> None:
        try:
            self.bump(using=using)
        except Exception:  # the save stands; copies age out within MAX_AGE_S
            log.warning("version.bump_failed", key=self.key, exc_info=True)

    def _set_new(self) -> None:
        version = uuid.uuid4().hex
        cache.set(self.key, version, timeout=None)
        # This process sees its own change at once, also if a read that began before it
        # ends after it (the generation tells that read not to keep the old version).
        with self._mutex:
            self._generation += 1
            self._last_read = (time.time(), version)
