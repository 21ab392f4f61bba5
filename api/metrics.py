"""GET /metrics: Prometheus's text format, for METRICS_TOKEN holders.

Two parts. The process's own (django-prometheus and prometheus-client: requests, latencies,
database queries, the process's memory and CPU) are counted in memory, one set per web process;
with PROMETHEUS_MULTIPROC_DIR set, the processes of one container share them through files.
The service's own are read from PostgreSQL and Redis when scraped, so they are the same whichever
web process answers and count the work of every worker process and container, which no web
process could read from memory; they are cached for METRICS_CACHE_S (shared through CACHE_URL),
so several scrapers cost one set of aggregate queries per period.
"""

import hmac
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from api.errors import error_body
from approvals.models import Approval, ApprovalStatus
from execution.limits import deferrals
from execution.metrics import queue_lengths, resume_histogram
from plans.models import Plan, Subtask, SubtaskStatus

CACHE_KEY = "metrics:service"
PREFIX = "plan_execution"
# What a decided approval is counted by. A `channel` (api, admin, cli, policy, expiry) joins
# these labels once approvals record the channel that decided them.
DECIDED_BY = ("kind", "status")
OUTCOMES = (SubtaskStatus.DONE, SubtaskStatus.FAILED, SubtaskStatus.SKIPPED, SubtaskStatus.CANCELLED)
# A scrape never holds the database longer than this.
STATEMENT_TIMEOUT_MS = 5000

TOKENS_SQL = """
SELECT s.agent, coalesce(step->>'model', ''), sum((step->>'prompt_tokens')::bigint)::bigint,
       sum((step->>'completion_tokens')::bigint)::bigint
FROM plans_subtask s CROSS JOIN LATERAL jsonb_array_elements(s.usage->'steps') step
WHERE s.usage ? 'steps'
GROUP BY 1, 2
"""


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Answer the scrape, or 401/403 in the API's error format."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        process = CollectorRegistry()
        multiprocess.MultiProcessCollector(process)
    else:
        process = REGISTRY
    return HttpResponse(generate_latest(process) + generate_latest(SERVICE), content_type=CONTENT_TYPE_LATEST)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEBUG:
            return None
        message = "Set METRICS_TOKEN, and send it as `Authorization: Bearer <token>`, to read the metrics."
        return JsonResponse(error_body("permission_denied", message), status=403)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    message = "Send `Authorization: Bearer <METRICS_TOKEN>`."
    response = JsonResponse(error_body("not_authenticated", message), status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def service_figures() -> dict[str, Any]:
    """Return the service's figures from PostgreSQL and Redis (cached for METRICS_CACHE_S)."""
    figures = cache.get(CACHE_KEY)
    if figures is None:
        figures = {
            **_database_figures(),
            "queues": queue_lengths(),
            "resume": resume_histogram(),
            "deferrals": deferrals(),
        }
        cache.set(CACHE_KEY, figures, timeout=settings.METRICS_CACHE_S)
    return figures


def _database_figures() -> dict[str, Any]:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            cursor.execute(TOKENS_SQL)
            tokens = cursor.fetchall()
        pending = Approval.objects.filter(status=ApprovalStatus.PENDING).aggregate(
            count=Count("pk"), oldest=Min("requested_at")
        )
        return {
            "plans": list(Plan.objects.order_by().values_list("status").annotate(Count("pk"))),
            "pending": pending["count"],
            "oldest_s": (timezone.now() - pending["oldest"]).total_seconds() if pending["oldest"] else 0.0,
            "decided": list(
                Approval.objects.exclude(status=ApprovalStatus.PENDING)
                .order_by()
                .values_list(*DECIDED_BY)
                .annotate(Count("pk"))
            ),
            "outcomes": list(
                Subtask.objects.filter(status__in=OUTCOMES)
                .order_by()
                .values_list("agent", "status")
                .annotate(Count("pk"))
            ),
            "tokens": tokens,
        }


class ServiceCollector(Collector):
    """The service's metrics, from service_figures()."""

    def collect(self) -> Iterator[Metric]:
        figures = service_figures()
        plans = GaugeMetricFamily(f"{PREFIX}_plans", "Plans by status.", labels=["status"])
        for status, count in figures["plans"]:
            plans.add_metric([status], count)
        yield plans
        yield GaugeMetricFamily(f"{PREFIX}_approvals_pending", "Approvals waiting for a decision.", figures["pending"])
        yield GaugeMetricFamily(
            f"{PREFIX}_approvals_oldest_pending_age_seconds",
            "How long the oldest pending approval has waited (0 when none waits).",
            figures["oldest_s"],
        )
        decided = CounterMetricFamily(f"{PREFIX}_approvals_decided", "Approvals decided.", labels=list(DECIDED_BY))
        for *labels, count in figures["decided"]:
            decided.add_metric(labels, count)
        yield decided
        outcomes = CounterMetricFamily(
            f"{PREFIX}_subtask_outcomes", "Subtasks finished, by agent and status.", labels=["agent", "status"]
        )
        for agent, status, count in figures["outcomes"]:
            outcomes.add_metric([agent, status], count)
        yield outcomes
        yield from self._tokens(figures["tokens"])
        yield self._resume(figures["resume"])
        queues = GaugeMetricFamily(
            f"{PREFIX}_queue_messages", "Messages waiting in a Celery queue (all its priorities).", labels=["queue"]
        )
        for queue, count in figures["queues"].items():
            queues.add_metric([queue], count)
        yield queues
        deferred = CounterMetricFamily(
            f"{PREFIX}_limit_deferrals",
            "Runs put off because their agent was at a provider limit, by agent.",
            labels=["agent"],
        )
        for agent, count in sorted(figures["deferrals"].items()):
            deferred.add_metric([agent], count)
        yield deferred

    def _tokens(self, rows: list[tuple[str, str, int, int]]) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            f"{PREFIX}_model_tokens", "Model tokens used, by agent, model and kind.", labels=["agent", "model", "kind"]
        )
        for agent, model, prompt, completion in rows:
            tokens.add_metric([agent, model, "prompt"], prompt or 0)
            tokens.add_metric([agent, model, "completion"], completion or 0)
        yield tokens

    def _resume(self, resume: dict[str, Any]) -> Metric:
        return HistogramMetricFamily(
            f"{PREFIX}_decision_to_resume_seconds",
            "From a decision on a tool call to the start of the run it resumes.",
            buckets=[(_bound(bound), count) for bound, count in resume["buckets"]],
            sum_value=resume["sum"],
        )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


SERVICE = CollectorRegistry(auto_describe=False)
SERVICE.register(ServiceCollector())
