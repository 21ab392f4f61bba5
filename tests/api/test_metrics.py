"""GET /metrics: the process's HTTP and database metrics and the service's own, for METRICS_TOKEN holders only."""

import re
import time
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from api import metrics
from approvals.models import Approval, ApprovalKind, ApprovalStatus
from execution import metrics as execution_metrics
from execution.limits import deferral_count
from execution.metrics import broker_redis, resume_histogram, resume_observe, resumes_write
from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus
from tests.support.factories import UserFactory, draft_plan, subtask

pytestmark = pytest.mark.django_db

TOKEN = "scrape-me"


@pytest.fixture(autouse=True)
def _fresh(settings, monkeypatch):
    settings.METRICS_TOKEN = TOKEN
    cache.delete(metrics.CACHE_KEY)
    # A histogram of this test's own: the suite's worker processes write theirs (a second after
    # their runs resume) to the service's key; what this process noted before goes there first.
    resumes_write()
    histogram = f"{execution_metrics.RESUME_KEY}:test-{uuid.uuid4().hex}"
    monkeypatch.setattr(execution_metrics, "RESUME_KEY", histogram)
    yield
    resumes_write()
    broker_redis().delete(histogram)
    cache.delete(metrics.CACHE_KEY)


def scrape(token: str | None = TOKEN):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().get("/metrics", **headers)


def sample(text: str, name: str, **labels: str) -> float:
    """Return one sample's value from the text format (0 when absent), whatever the order of its labels."""
    for line in text.splitlines():
        found = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if found and found.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or "")) == labels:
            return float(found.group(3))
    return 0.0


def test_only_the_token_holder_reads_the_metrics(settings):
    assert scrape(None).status_code == 401
    assert scrape("wrong").status_code == 401
    assert scrape(None)["WWW-Authenticate"].startswith("Bearer")
    assert scrape(None).json()["error"]["code"] == "not_authenticated"
    settings.METRICS_TOKEN = ""
    assert scrape(None).json()["error"]["code"] == "permission_denied"
    settings.DEBUG = True
    assert scrape(None).status_code == 200


def test_the_process_metrics_count_requests_latencies_and_database_queries():
    scrape()
    text = scrape().content.decode()
    assert "django_http_requests_latency_seconds_by_view_method_bucket" in text
    assert "django_http_responses_total_by_status_total" in text
    assert sample(text, "django_db_execute_total", alias="default", vendor="postgresql") > 0
    assert "process_resident_memory_bytes" in text


def test_the_service_metrics_come_from_the_database_and_redis():
    owner = UserFactory()
    running = draft_plan(owner, subtask("a", agent="script"), subtask("b", agent="script"))
    Plan.objects.filter(pk=running.pk).update(status=PlanStatus.IN_PROGRESS)
    Approval.objects.create(plan=running, kind=ApprovalKind.PLAN, status=ApprovalStatus.APPROVED)
    steps = [{"model": "m1", "prompt_tokens": 10, "completion_tokens": 3}] * 2
    Subtask.objects.filter(plan=running, key="a").update(status=SubtaskStatus.DONE, usage={"steps": steps})
    Subtask.objects.filter(plan=running, key="b").update(status=SubtaskStatus.FAILED)
    pending = Approval.objects.create(plan=draft_plan(owner, subtask("c")), kind=ApprovalKind.PLAN)
    Approval.objects.filter(pk=pending.pk).update(requested_at=timezone.now() - timedelta(minutes=5))
    decided_at = (timezone.now() - timedelta(seconds=0.2)).isoformat()
    # A decision of its own: its mark stays in Redis for a day, and a suite may run again before that.
    decided = {"tool": "t", "approval_id": str(uuid.uuid4()), "decided_at": decided_at, "status": "approved"}
    resume_observe([decided])
    resume_observe([decided])  # a retry
    resumes_write()  # as the process's writer does every second

    text = scrape().content.decode()
    assert sample(text, "plan_execution_plans", status="in_progress") == 1
    assert sample(text, "plan_execution_plans", status="draft") == 1
    assert sample(text, "plan_execution_approvals_pending") == 1
    assert 290 < sample(text, "plan_execution_approvals_oldest_pending_age_seconds") < 400
    assert sample(text, "plan_execution_approvals_decided_total", kind="plan", status="approved") == 1
    assert sample(text, "plan_execution_subtask_outcomes_total", agent="script", status="done") == 1
    assert sample(text, "plan_execution_subtask_outcomes_total", agent="script", status="failed") == 1
    assert sample(text, "plan_execution_model_tokens_total", agent="script", model="m1", kind="prompt") == 20
    assert sample(text, "plan_execution_model_tokens_total", agent="script", model="m1", kind="completion") == 6
    assert sample(text, "plan_execution_decision_to_resume_seconds_count") == 1
    assert sample(text, "plan_execution_decision_to_resume_seconds_bucket", le="0.1") == 0
    assert sample(text, "plan_execution_decision_to_resume_seconds_bucket", le="0.25") == 1
    for queue in ("subtasks", "control", "webhooks"):
        assert f'plan_execution_queue_messages{{queue="{queue}"}}' in text


def decision(seconds_ago: float) -> dict:
    decided_at = (timezone.now() - timedelta(seconds=seconds_ago)).isoformat()
    return {"tool": "t", "approval_id": str(uuid.uuid4()), "decided_at": decided_at, "status": "approved"}


def test_noted_resumes_are_written_by_the_processs_own_writer():
    resume_observe([decision(0.02)])
    resume_observe([decision(3)])
    for _ in range(100):  # the writer thread writes every RESUME_WRITE_EVERY_S
        if resume_histogram()["count"] == 2:
            break
        time.sleep(0.1)
    histogram = resume_histogram()
    assert histogram["count"] == 2
    assert dict(histogram["buckets"])[0.025] == 1
    assert dict(histogram["buckets"])[5.0] == 2
    assert 3 < histogram["sum"] < 4


def test_a_retry_written_after_its_first_run_is_not_counted_again():
    first = decision(0.2)
    resume_observe([first])
    resumes_write()
    resume_observe([first])  # the run's next attempt, noted in a later write
    resume_observe([{**first, "decided_at": "not a time"}])  # unreadable: not noted
    resumes_write()
    assert resume_histogram()["count"] == 1


def test_the_service_figures_are_read_once_per_period(django_assert_max_num_queries):
    scrape()
    with django_assert_max_num_queries(0):
        metrics.service_figures()


def test_runs_deferred_at_a_provider_limit_are_counted_by_agent():
    agent = f"deferred-{uuid.uuid4().hex[:8]}"
    deferral_count(agent)
    deferral_count(agent)

    assert sample(scrape().content.decode(), "plan_execution_limit_deferrals_total", agent=agent) == 2
