"""Celery entry points of the approvals app."""

from celery import shared_task

from approvals.services import approvals_expire_overdue


@shared_task(name="approvals.expire_overdue", ignore_result=True)
def expire_overdue() -> int:
    """Expire pending approvals past their expiry (Celery beat)."""
    return approvals_expire_overdue()
