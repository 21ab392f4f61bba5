"""Admin for subtasks: their outcome, tool-call transcript and Celery task, alone and inline in their plan."""

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from config.results import is_database_backend
from desk.access import StaffReadOnly
from desk.display import badge, history_table, plan_link, pretty_json, pretty_text, subtask_link
from plans.models import Subtask
from plans.selectors import plans_visible_to


def task_result_link(subtask: Subtask) -> SafeString | str:
    """Return a link to the Celery task result of the subtask's current dispatch (its id where results are in Redis)."""
    if not subtask.task_id:
        return "—"
    if not is_database_backend(settings.CELERY_RESULT_BACKEND):
        return subtask.task_id
    url = reverse("admin:django_celery_results_taskresult_changelist") + "?" + urlencode({"task_id": subtask.task_id})
    return format_html('<a href="{}" title="{}">task result</a>', url, subtask.task_id)


def subtask_outcome(subtask: Subtask, *, limit: int | None = 400) -> SafeString | str:
    """Return the subtask's error, or its result, readably."""
    if subtask.error:
        return pretty_text(subtask.error, limit=limit)
    if subtask.result is not None:
        return pretty_json(subtask.result, limit=limit)
    return "—"


TASK_RESULTS_PERMISSION = "django_celery_results.view_taskresult"


def without_task(fields: Sequence[Any], request: HttpRequest) -> list[Any]:
    """Drop the Celery task column for users who may not open task results (it would link to a 403)."""
    if request.user.has_perm(TASK_RESULTS_PERMISSION):
        return list(fields)
    kept = []
    for field in fields:
        if isinstance(field, (list, tuple)):
            field = tuple(name for name in field if name != "task")
        if field and field != "task":
            kept.append(field)
    return kept


class SubtaskInline(StaffReadOnly, admin.TabularInline):
    # The parent admin has checked the plan is visible; its subtasks are too.
    model = Subtask
    fields = (
        "key_link",
        "agent",
        "status_badge",
        "attempts",
        "depends_on_keys",
        "outcome",
        "task",
        "batch_index",
    )
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subtask]:
        return super().get_queryset(request).prefetch_related("depends_on")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return without_task(super().get_fields(request, obj), request)

    @admin.display(description="key")
    def key_link(self, subtask: Subtask) -> SafeString:
        return subtask_link(subtask.pk, subtask.key)

    @admin.display(description="status")
    def status_badge(self, subtask: Subtask) -> SafeString:
        return badge(subtask.status)

    @admin.display(description="depends on")
    def depends_on_keys(self, subtask: Subtask) -> str:
        return ", ".join(dep.key for dep in subtask.depends_on.all()) or "—"

    @admin.display(description="result / error")
    def outcome(self, subtask: Subtask) -> SafeString | str:
        return subtask_outcome(subtask, limit=300)

    @admin.display(description="Celery task")
    def task(self, subtask: Subtask) -> SafeString | str:
        return task_result_link(subtask)


@admin.register(Subtask)
class SubtaskAdmin(StaffReadOnly, admin.ModelAdmin):
    list_display = ["key", "plan_link", "agent", "status_badge", "attempts", "batch_index", "task", "updated_at"]
    list_filter = ["status", "agent"]
    search_fields = ["key", "plan__goal"]
    list_select_related = ["plan"]
    fields = [
        "plan_link",
        ("key", "agent"),
        "description",
        ("status_badge", "attempts", "retries", "max_retries", "timeout_s"),
        "depends_on_keys",
        "input_json",
        "outcome",
        "tool_call_transcript",
        "mcp_tools",
        "token_usage",
        "conversation_transcript",
        ("task", "worker"),
        ("batch_index", "position"),
        ("queued_at", "started_at", "completed_at", "updated_at"),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subtask]:
        return super().get_queryset(request).filter(plan__in=plans_visible_to(request.user))

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return without_task(super().get_list_display(request), request)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return without_task(super().get_fields(request, obj), request)

    @admin.display(description="plan", ordering="plan__created_at")
    def plan_link(self, subtask: Subtask) -> SafeString:
        return plan_link(subtask.plan_id, subtask.plan.goal)

    @admin.display(description="status", ordering="status")
    def status_badge(self, subtask: Subtask) -> SafeString:
        return badge(subtask.status)

    @admin.display(description="depends on")
    def depends_on_keys(self, subtask: Subtask) -> SafeString | str:
        deps = subtask.depends_on.order_by("position").only("pk", "key", "status")
        return (
            format_html_join(
                " ",
                '<a href="{}">{}</a> {}',
                ((reverse("admin:plans_subtask_change", args=[dep.pk]), dep.key, badge(dep.status)) for dep in deps),
            )
            or "—"
        )

    @admin.display(description="input")
    def input_json(self, subtask: Subtask) -> SafeString:
        return pretty_json(subtask.input)

    @admin.display(description="result / error")
    def outcome(self, subtask: Subtask) -> SafeString | str:
        return subtask_outcome(subtask, limit=None)

    @admin.display(description="tool calls")
    def tool_call_transcript(self, subtask: Subtask) -> SafeString | str:
        if not subtask.tool_calls:
            return "—"
        servers = _mcp_servers_of_tools(subtask)
        return history_table(
            ["#", "tool", "arguments", "status", "decision", "result"],
            (
                (
                    index,
                    _tool_name(call.get("tool", ""), servers),
                    pretty_json(call.get("arguments", {}), limit=400),
                    badge(call.get("status", "")),
                    _decision(call),
                    pretty_json(call["result"], limit=400) if call.get("result") is not None else "—",
                )
                for index, call in enumerate(subtask.tool_calls)
            ),
        )

    @admin.display(description="MCP tools offered")
    def mcp_tools(self, subtask: Subtask) -> SafeString | str:
        offered = (subtask.agent_state or {}).get("mcp_tools") or []
        servers: dict[str, list[str]] = {}
        for tool in offered:
            servers.setdefault(str(tool.get("server", "")), []).append(str(tool.get("tool", "")))
        return (
            format_html_join(
                "", "<div>server <b>{}</b>: {}</div>", ((name, ", ".join(tools)) for name, tools in servers.items())
            )
            or "—"
        )

    @admin.display(description="token usage")
    def token_usage(self, subtask: Subtask) -> str:
        usage = subtask.usage or {}
        if not usage:
            return "—"
        steps = len(usage.get("steps", []))
        return (
            f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"
            f" over {steps} model call{'s' if steps != 1 else ''}"
        )

    @admin.display(description="conversation")
    def conversation_transcript(self, subtask: Subtask) -> SafeString | str:
        if not subtask.conversation:
            return "—"
        servers = _mcp_servers_of_tools(subtask)
        return history_table(
            ["#", "role", "content", "tool calls"],
            (
                (index, message.get("role", ""), _message_text(message), _message_calls(message, servers))
                for index, message in enumerate(subtask.conversation)
            ),
            css="history conversation",
        )

    @admin.display(description="Celery task")
    def task(self, subtask: Subtask) -> SafeString | str:
        return task_result_link(subtask)


def _message_text(message: dict[str, Any]) -> SafeString | str:
    content = message.get("content")
    text = content if isinstance(content, str) else "" if content is None else str(content)
    if message.get("tool_call_id"):
        text = f"[{message['tool_call_id']}] {text}"
    return pretty_text(text, limit=2000) if text else "—"


def _mcp_servers_of_tools(subtask: Subtask) -> dict[str, str]:
    """Return the MCP tools the subtask's model was offered, each with the name of its server."""
    offered = (subtask.agent_state or {}).get("mcp_tools") or []
    return {str(tool.get("name")): str(tool.get("server")) for tool in offered if isinstance(tool, dict)}


def _tool_name(name: str, servers: dict[str, str]) -> SafeString | str:
    """Return a tool's name, with its MCP server named when it is one's."""
    server = servers.get(name)
    return format_html("{} <small>(MCP server {})</small>", name, server) if server else name


def _message_calls(message: dict[str, Any], servers: dict[str, str]) -> SafeString | str:
    calls = message.get("tool_calls") or []
    return (
        format_html_join(
            "",
            "<div>{} <code>{}</code> {}</div>",
            (
                (
                    call.get("id", ""),
                    _tool_name(call.get("function", {}).get("name", ""), servers),
                    call.get("function", {}).get("arguments", ""),
                )
                for call in calls
            ),
        )
        or "—"
    )


def _decision(call: dict[str, Any]) -> SafeString | str:
    parts = []
    if call.get("decided_by"):
        parts.append(format_html("by {}", call["decided_by"]))
    if call.get("reason"):
        parts.append(format_html("“{}”", call["reason"]))
    edited = call.get("approved_arguments")
    if edited is not None and edited != call.get("arguments"):
        parts.append(format_html("edited arguments: {}", pretty_json(edited, limit=400)))
    if call.get("approval_id"):
        url = reverse("admin:approvals_approval_change", args=[call["approval_id"]])
        parts.append(format_html('<a href="{}">approval</a>', url))
    return format_html_join(" ", "{}", ((part,) for part in parts)) or "—"
