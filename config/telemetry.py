"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT names a collector (OTLP over HTTP).

Web requests, Celery tasks (their trace context travels in the messages' headers, so a plan's
tasks join the trace of the request that set them off), PostgreSQL statements (psycopg) and
outgoing HTTP (requests: the HTTP agent and webhooks; httpx: the models and MCP servers) become
spans, batched to the collector. The standard OTEL_* variables tune the rest (OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_SCHEDULE_DELAY...). The packages are optional
(requirements-otel.txt): while the variable is unset, nothing of OpenTelemetry is imported.
"""

import os

from common.prepared import prepared_cursor_class_set
from common.version import VERSION

_configured_in: int | None = None


def enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(service: str) -> None:
    """Trace this process (once per process: a forked pool process configures its own)."""
    global _configured_in
    if not enabled() or _configured_in == os.getpid():
        return
    _configured_in = os.getpid()
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"plans-{service}", "service.version": VERSION}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    # The hot path's statements go through cursors of their own (common/prepared.py), which the
    # instrumentor does not reach: they get its traced cursor class, on psycopg's own Cursor.
    from opentelemetry.instrumentation.psycopg import _new_cursor_factory

    prepared_cursor_class_set(_new_cursor_factory(tracer_provider=provider))
    RequestsInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    if service == "web":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=provider)


def flush() -> None:
    """Send the spans still batched (a process about to end)."""
    if _configured_in == os.getpid():
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush()
