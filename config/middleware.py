"""The service's own middleware: the runs a request sends go out with its answer; its subject, in its log lines."""

import contextlib
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from common.logs import log_context_pop, log_context_push
from execution import canvas

# URL names (their start) -> the id their `pk` or `object_id` is: the API's viewsets and the admin's pages.
SUBJECTS = (
    ("plan-", "plan_id"),
    ("approval-", "approval_id"),
    ("plans_plan_", "plan_id"),
    ("plans_subtask_", "subtask_id"),
    ("approvals_approval_", "approval_id"),
)


class LogContextMiddleware(MiddlewareMixin):
    """Tag the log lines of a request about one plan, subtask or approval with its id."""

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        match = request.resolver_match
        subject_id = kwargs.get("pk") or kwargs.get("object_id")
        if match is None or subject_id is None:
            return
        for prefix, key in SUBJECTS:
            if (match.url_name or "").startswith(prefix):
                request._log_context = log_context_push(**{key: subject_id})  # type: ignore[attr-defined]
                return

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        token = getattr(request, "_log_context", None)
        if token is not None:
            # Set in another context (under ASGI, another thread's copy): it ends with the request anyway.
            with contextlib.suppress(ValueError):
                log_context_pop(token)
        return response


class RunsSentWithAnswerMiddleware:
    """Send the runs a request queues (a decision's resume, a plan's first batch) once its answer is ready.

    A run is sent after the transaction that queues it commits (transaction.on_commit); sent
    from there, the worker started on it while the request still built its answer (read back
    the approval, serialized and rendered it), and the two shared the machine's cores. Held to
    the end of the request, every run it queued goes out in one publish batch just before the
    answer does. What is held is sent whatever the request comes to (canvas.sends_held).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with canvas.sends_held():
            return self.get_response(request)
