FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The optional OpenTelemetry packages are installed too: they stay unimported until
# OTEL_EXPORTER_OTLP_ENDPOINT names a collector.
COPY requirements.txt requirements-otel.txt ./
RUN pip install -r requirements.txt -r requirements-otel.txt

COPY . .
# Static files are collected at build time and served by WhiteNoise.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0

RUN useradd --create-home app
USER app
EXPOSE 8000
# The web process serves (the image has no curl: Python asks). Compose's services override it:
# the web's checks readiness, the workers' ping their own node.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live/', timeout=2)"]
# uvicorn with one process per core, or WEB_CONCURRENCY of them.
CMD ["scripts/web.sh", "--host", "0.0.0.0", "--port", "8000"]
