"""Housekeeping's log: idle ticks say nothing at INFO; a repair or an expiry says what it did, naming the plan."""

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from celery import current_app
from django.utils import timezone

from approvals.models import ApprovalStatus
from approvals.services import approvals_expire_overdue
from config.log_filters import HOUSEKEEPING_TASKS, HousekeepingToDebug
from execution.engine.reconciler import reconcile
from execution.services import plan_submit
from plans.models import SubtaskStatus
from tests.desk.support import running_plan
from tests.support.factories import UserFactory, plan_data, subtask


def housekeeping_runs(worker) -> int:
    stats: dict[str, Any] = current_app.control.inspect(destination=[worker.hostname], timeout=5).stats() or {}
    totals = stats.get(worker.hostname, {}).get("total", {})
    return sum(totals.get(name, 0) for name in HOUSEKEEPING_TASKS)


@pytest.mark.slow
def test_idle_ticks_leave_no_info_lines_in_beat_or_the_control_worker(engine):
    # The cluster runs `celery -A config beat` and `celery -A config worker` with --loglevel INFO, as the Procfile does.
    beat, control = engine["beat"], engine["control"]
    offsets = {worker.log: worker.log.stat().st_size for worker in (beat, control)}
    runs_before = housekeeping_runs(control)

    time.sleep(3.5)  # three ticks of EXECUTION_RECONCILE_INTERVAL_S

    assert housekeeping_runs(control) >= runs_before + 4, "the housekeeping tasks did not run"
    logged = "".join(path.read_bytes()[offset:].decode(errors="replace") for path, offset in offsets.items())
    about_housekeeping = [line for line in logged.splitlines() if any(name in line for name in HOUSEKEEPING_TASKS)]
    assert about_housekeeping == []


def test_celery_lines_about_housekeeping_are_demoted_to_debug_and_others_kept():
    def record(logger: str, level: int, message: str, args) -> logging.LogRecord:
        made = logging.LogRecord(logger, level, __file__, 1, message, args, None)
        if isinstance(args, dict):
            made.data = args  # as celery's trace and strategy pass their context
        return made

    housekeeping = [
        record(
            "celery.beat", logging.INFO, "Scheduler: Sending due task %s (%s)", ("reconcile", "execution.reconcile")
        ),
        record(
            "celery.worker.strategy",
            logging.INFO,
            "Task %(name)s[%(id)s] received",
            {"name": "execution.reconcile", "id": "1"},
        ),
        record(
            "celery.app.trace",
            logging.INFO,
            "Task %(name)s[%(id)s] succeeded",
            {"name": "approvals.expire_overdue", "id": "2"},
        ),
        record("celery.worker.request", logging.INFO, "Discarding revoked task: %s[%s]", ("execution.reconcile", "3")),
    ]
    others = [
        record(
            "celery.app.trace",
            logging.INFO,
            "Task %(name)s[%(id)s] succeeded",
            {"name": "execution.run_subtask", "id": "4"},
        ),
        record(
            "celery.app.trace",
            logging.ERROR,
            "Task %(name)s[%(id)s] raised",
            {"name": "execution.reconcile", "id": "5"},
        ),
    ]
    quiet = HousekeepingToDebug()

    assert [quiet.filter(line) for line in housekeeping] == [False] * 4
    assert {line.levelname for line in housekeeping} == {"DEBUG"}
    assert [quiet.filter(line) for line in others] == [True, True]
    assert [line.levelname for line in others] == ["INFO", "ERROR"]


def test_an_idle_reconcile_logs_nothing(db, caplog):
    with caplog.at_level(logging.DEBUG, logger="execution.engine.reconciler"):
        assert reconcile() == {"lost_runs": 0, "resent": 0, "advanced": 0}
    assert caplog.records == []


def test_a_reconcile_that_resends_a_subtask_logs_one_line_naming_the_plan(db, caplog):
    plan = running_plan(UserFactory(), subtask("lost"))
    # Its message never reached the broker, long ago.
    plan.subtasks.update(status=SubtaskStatus.QUEUED, task_id="", queued_at=timezone.now() - timedelta(minutes=5))

    with caplog.at_level(logging.INFO, logger="execution.engine.reconciler"):
        assert reconcile()["resent"] == 1

    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", f"Reconciler: plan {plan.pk}: re-sent subtask 'lost' (attempt 1): its message was not in flight")
    ]


def test_an_expired_approval_logs_one_line_naming_the_plan(db, caplog):
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    approval = plan.approvals.get()
    approval.expires_at = timezone.now() - timedelta(seconds=1)
    approval.save(update_fields=["expires_at"])

    with caplog.at_level(logging.INFO, logger="approvals.services"):
        assert approvals_expire_overdue() == 1

    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    assert [record.getMessage() for record in caplog.records] == [
        f"Plan {plan.pk}: its plan approval expired undecided"
    ]
