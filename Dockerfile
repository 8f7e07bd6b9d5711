# syntax=docker/dockerfile:1
# The gateway's production image: uvicorn (faster than daphne for this app, see
# bench/RESULTS.md), through core/serving.py, serving config.asgi on $PORT as a non-root user.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
WORKDIR /app
COPY . .
# Static files for the admin and the API docs, collected with throwaway settings.
RUN DJANGO_SETTINGS_MODULE=config.settings.local python manage.py collectstatic --noinput --verbosity 0

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    PORT=8000 \
    WEB_CONCURRENCY=1
# Fixed ids: Kubernetes' runAsNonRoot can only check a numeric user (deploy/kubernetes runs as 10001).
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home gateway
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=gateway:gateway /app /app
WORKDIR /app
RUN rm -rf tests bench .ci scripts var/db.sqlite3 var/dev-signing-key.pem
USER 10001:10001
EXPOSE 8000
# With HTTPS_CERT_FILE the port speaks HTTPS only. The probe asks its own process on loopback,
# where the certificate's names (the public host) cannot match, so it does not verify them.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os, ssl, urllib.request; tls = bool(os.environ.get('HTTPS_CERT_FILE')); urllib.request.urlopen(('https' if tls else 'http') + f'://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2, context=ssl._create_unverified_context() if tls else None)" || exit 1
# uvicorn with the gateway's read bounds and options from settings (core/serving.py); port and
# workers from PORT and WEB_CONCURRENCY (uvicorn's supervisor, chosen over gunicorn: README,
# "Many processes"), trusted proxies from FORWARDED_ALLOW_IPS. With several workers /metrics sums
# them through PROMETHEUS_MULTIPROC_DIR (a private directory under /tmp unless set: mount a
# writable emptyDir there when the root file system is read-only).
CMD ["python", "-m", "core.serving", "--host", "0.0.0.0"]
