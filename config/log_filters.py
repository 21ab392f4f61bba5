"""Logging filters: beat's housekeeping ticks stay out of the INFO log unless they change something."""

import logging
from collections.abc import Mapping

# Periodic tasks of CELERY_BEAT_SCHEDULE; each logs a line of its own when it repairs,
# advances or expires something (execution/engine/reconciler.py, approvals/services.py).
HOUSEKEEPING_TASKS = frozenset({"execution.reconcile", "approvals.expire_overdue"})

# Where Celery logs a task being sent by beat, received, discarded as expired, and finished.
CELERY_TASK_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.worker.request", "celery.app.trace")


def task_name_of(record: logging.LogRecord) -> str | None:
    """Return the name of the task a Celery log record is about, when it names one."""
    data = getattr(record, "data", None)  # trace and strategy pass their context as extra={"data": ...}
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        return data["name"]
    if isinstance(record.args, Mapping) and isinstance(record.args.get("name"), str):
        return str(record.args["name"])
    if isinstance(record.args, tuple):
        return next((arg for arg in record.args if isinstance(arg, str) and arg in HOUSEKEEPING_TASKS), None)
    return None


class HousekeepingToDebug(logging.Filter):
    """Demote Celery's routine INFO lines about the housekeeping tasks to DEBUG.

    Every few seconds beat sends each housekeeping task and a worker receives and finishes
    it: six lines that say nothing happened. They are logged at DEBUG instead, so they show
    only with LOG_LEVEL (or celery's --loglevel) DEBUG; warnings and errors are untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or task_name_of(record) not in HOUSEKEEPING_TASKS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # The logger let the record through at INFO; decide again at its new level.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
