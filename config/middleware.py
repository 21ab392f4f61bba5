"""The plan, subtask or approval a request is about, put in the log context for its log lines."""

import contextlib
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from common.logs import log_context_pop, log_context_push

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
