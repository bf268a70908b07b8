# syntax=docker/dockerfile:1
# Orchestra: one image for every full-stack process (docs/operations.md).
#   web (default):  uvicorn, HTTP + WebSocket
#   worker:         celery -A orchestra_site worker --pool threads --concurrency 4  (one per core)
#   beat:           celery -A orchestra_site beat --schedule /tmp/celerybeat-schedule

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the virtualenv with the runtime requirements ---------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY requirements/base.txt /tmp/requirements/base.txt
RUN pip install --upgrade pip \
    && pip install -r /tmp/requirements/base.txt

# --- runtime -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_ENV=production \
    PORT=8000 \
    WEB_CONCURRENCY=2

RUN groupadd --system --gid 10001 orchestra \
    && useradd --system --uid 10001 --gid orchestra --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin orchestra

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Code and static files belong to root: the app user can read them, not change them.
COPY . /app

# Production settings refuse to load without a real-looking SECRET_KEY and ALLOWED_HOSTS.
# These values exist for this one build step only; they are not in the image's env.
RUN SECRET_KEY=collectstatic-build-step-only-not-a-secret-0123456789abcdef \
    ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var/metrics \
    && chown -R orchestra:orchestra /app/var

USER orchestra

EXPOSE 8000

# Liveness only (/health/ touches no dependency). Django answers 400 to a Host that is not
# in ALLOWED_HOSTS, so the probe sends the first allowed host. Plain HTTP is fine:
# /health/ is exempt from SECURE_SSL_REDIRECT. Worker and beat serve no HTTP: their
# containers override this check (docker-compose.yml) or disable it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; h = (os.environ.get('ALLOWED_HOSTS') or 'localhost').split(',')[0].strip().lstrip('.'); h = 'localhost' if h in ('', '*') else h; u.urlopen(u.Request('http://127.0.0.1:%s/health/' % os.environ.get('PORT', '8000'), headers={'Host': h}), timeout=4)"]

# `exec` so uvicorn is PID 1 and gets SIGTERM; sh expands PORT and WEB_CONCURRENCY.
CMD ["sh", "-c", "exec uvicorn orchestra_site.asgi:application --host 0.0.0.0 --port ${PORT:-8000} --workers ${WEB_CONCURRENCY:-2} --no-access-log --proxy-headers"]
