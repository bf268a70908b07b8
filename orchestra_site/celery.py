"""The Celery app. Tasks carry the request id of whoever enqueued them."""

import os

import structlog
from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_ready

from infrastructure.request_id import bind_request_id, current_request_id, resolve_request_id
from orchestra_site.gc_tuning import freeze_startup_objects

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")

app = Celery("orchestra")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "request_id"


@before_task_publish.connect
def _attach_request_id(headers=None, **_kwargs):
    request_id = current_request_id()
    if headers is not None and request_id:
        headers[REQUEST_ID_HEADER] = request_id


@task_prerun.connect
def _bind_request_id(task=None, **_kwargs):
    incoming = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    bind_request_id(resolve_request_id(incoming))
    structlog.contextvars.bind_contextvars(task=task.name if task else None)


@task_postrun.connect
def _clear_request_id(**_kwargs):
    structlog.contextvars.clear_contextvars()


@worker_ready.connect
def _freeze_startup_objects(**_kwargs):
    """The worker has loaded its tasks and connected: what it holds now it keeps."""
    freeze_startup_objects()
