"""Versions in the shared cache that tell each process when its copy of some rows is stale.

A process keeps rows it reads on every request or turn (routing rules, API keys) and
compares one version key per use instead of querying. A save or delete of a watched
model sets a new version: at once, and again when the transaction commits, so a process
that reloaded in between (and may have read the old rows) reloads once more.
"""

import uuid

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save


class SharedVersion:
    def __init__(self, key: str):
        self.key = key

    def current(self) -> str:
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
        self.bump(using=using)

    def _set_new(self) -> None:
        cache.set(self.key, uuid.uuid4().hex, timeout=None)
