"""Admin for plans: the list with progress, and a page with subtasks, revisions, the DAG picture, history and events."""

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, Exists, Max, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timesince import timesince

from approvals.models import Approval, ApprovalStatus
from desk import dag
from desk.access import StaffReadOnly
from desk.admin.operations import OPERATIONS, PlanActionForm, operations_for, perform_and_report
from desk.admin.subtasks import SubtaskInline
from desk.display import badge, history_table, moment, pretty_json, progress_bar
from desk.revisions import REVISIONS_SHOWN, revisions_history
from execution.events import counter, progress_of
from execution.selectors import execution_of
from execution.states import PLAN_FINISHED
from plans.models import Plan, PlanStatus, SubtaskDependency, SubtaskStatus
from plans.selectors import plans_visible_to

S = SubtaskStatus
# A plan page lists its subtasks inline up to this many; bigger plans link to the subtask list.
INLINE_SUBTASKS = dag.MAX_NODES
EVENTS_SHOWN = 50
TRANSITIONS_SHOWN = 500


def _pending_approvals_count() -> Coalesce:
    pending = Approval.objects.filter(plan=OuterRef("pk"), status=ApprovalStatus.PENDING)
    return Coalesce(Subquery(pending.order_by().values("plan").annotate(n=Count("pk")).values("n")), 0)


def plan_picture(plan: Plan, *, changes: dict[str, str] | None = None) -> SafeString:
    """Return the picture of the plan's DAG (a summary when too large); `changes` outlines keys a revision touched."""
    total = plan.subtask_count
    edges = SubtaskDependency.objects.filter(subtask__plan=plan)
    if total > dag.MAX_NODES or dag.too_large(nodes=total, edges=edges.count()):
        # Queued subtasks are counted as pending (as in plan_progress).
        progress = _counts(plan)
        counts = {name: progress[name] for name in dag.SUBTASK_STATUSES if name != "queued"}
        last_batch = plan.subtasks.aggregate(last=Max("batch_index"))["last"]
        svg = dag.summary_svg(counts, batches=(last_batch or 0) + 1)
    else:
        changes = changes or {}
        nodes = [
            dag.Node(
                key=key,
                status=status,
                column=batch_index,
                position=position,
                label=agent,
                href=reverse("admin:plans_subtask_change", args=[pk]),
                change=changes.get(key, ""),
            )
            for pk, key, status, batch_index, position, agent in plan.subtasks.values_list(
                "pk", "key", "status", "batch_index", "position", "agent"
            )
        ]
        svg = dag.dag_svg(nodes, edges.values_list("depends_on__key", "subtask__key"))
    # The renderer escapes every label it draws.
    return format_html('<div class="plan-dag-frame">{}</div>', SafeString(svg))  # nosec


def _counts(plan: Plan) -> dict[str, int]:
    """Return the plan's progress counts (its counters: no subtask is counted here)."""
    counts: dict[str, int] = progress_of(
        {status: getattr(plan, counter(status)) for status in S.values}, plan.subtask_count
    )
    return counts


class PendingApprovalsFilter(admin.SimpleListFilter):
    title = "waiting for a human"
    parameter_name = "waiting"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Has pending approvals"), ("no", "No pending approvals")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Plan]) -> QuerySet[Plan]:
        pending = Exists(Approval.objects.filter(plan=OuterRef("pk"), status=ApprovalStatus.PENDING))
        if self.value() == "yes":
            return queryset.filter(pending)
        if self.value() == "no":
            return queryset.filter(~pending)
        return queryset


@admin.register(Plan)
class PlanAdmin(StaffReadOnly, admin.ModelAdmin):
    list_display = [
        "goal_short",
        "status_badge",
        "execution_badge",
        "progress",
        "subtask_counts",
        "approvals_waiting",
        "owner",
        "session_id",
        "age",
    ]
    list_display_links = ["goal_short"]
    list_filter = ["status", "execution__state", PendingApprovalsFilter, "failure_policy", "created_at"]
    search_fields = ["goal", "session_id"]
    search_help_text = "Search by goal, session id or plan id."
    list_per_page = 50
    action_form = PlanActionForm
    actions = ["approve_selected", "execute_selected", "cancel_selected", "retry_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "goal",
                    "id",
                    ("status_badge", "execution_badge"),
                    "progress",
                    "subtask_counts",
                    "approvals_waiting",
                    ("owner", "session_id"),
                    ("failure_policy", "max_parallel", "requires_approval", "auto_execute"),
                    "revision",
                    ("created_at", "approved_at", "started_at", "completed_at"),
                    "metadata_json",
                    "subtask_list",
                ]
            },
        ),
        ("Revisions", {"fields": ["revision_history"]}),
        ("Dependency graph", {"fields": ["dag_picture"]}),
        ("Transition history", {"fields": ["transition_history"]}),
        ("Event log", {"fields": ["event_log"], "classes": ["collapse"]}),
    ]
    inlines = [SubtaskInline]

    # --- who sees what: the API's rules (plans.selectors)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        return (
            plans_visible_to(request.user)
            .select_related("owner", "execution")
            .annotate(n_pending_approvals=_pending_approvals_count())
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Plan], search_term: str
    ) -> tuple[QuerySet[Plan], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            plan_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=plan_id), may_have_duplicates

    # Plans are submitted through the API or the command line, and change only through services
    # (StaffReadOnly); a superuser may delete a finished one.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser and (obj is None or obj.status in PLAN_FINISHED))

    def get_fieldsets(self, request: HttpRequest, obj: Plan | None = None) -> list:
        # A draft's revisions are what its reviewer reads; once approved, they are its past.
        return [
            (name, {**options, "classes": ["collapse"]})
            if name == "Revisions" and obj is not None and obj.status != PlanStatus.DRAFT
            else (name, options)
            for name, options in super().get_fieldsets(request, obj)
        ]

    def get_inlines(self, request: HttpRequest, obj: Plan | None) -> list[type[admin.options.InlineModelAdmin]]:
        if obj is None or obj.subtask_count > INLINE_SUBTASKS:
            return []
        return self.inlines

    # --- columns and fields

    @admin.display(description="goal", ordering="goal")
    def goal_short(self, plan: Plan) -> str:
        return Truncator(plan.goal).chars(80)

    @admin.display(description="status", ordering="status")
    def status_badge(self, plan: Plan) -> SafeString:
        return badge(plan.status)

    @admin.display(description="execution", ordering="execution__state")
    def execution_badge(self, plan: Plan) -> SafeString | str:
        execution = execution_of(plan)
        return badge(execution.state) if execution is not None else "—"

    @admin.display(description="progress")
    def progress(self, plan: Plan) -> SafeString:
        return progress_bar(_counts(plan))

    @admin.display(description="subtasks", ordering="subtask_count")
    def subtask_counts(self, plan: Plan) -> SafeString:
        counts = _counts(plan)
        shown = [
            (name.replace("_", " "), counts[name])
            for name in ["done", "failed", "running", "waiting_approval", "pending", "skipped", "cancelled"]
            if counts[name]
        ]
        details = format_html_join(", ", "{} {}", ((count, name) for name, count in shown))
        return format_html("{} total{}{}", counts["total"], ": " if shown else "", details)

    @admin.display(description="approvals waiting", ordering="n_pending_approvals")
    def approvals_waiting(self, plan: Plan) -> SafeString | int:
        count = getattr(plan, "n_pending_approvals", 0)
        if not count:
            return 0
        url = (
            reverse("admin:approvals_approval_changelist")
            + "?"
            + urlencode({"plan__id__exact": str(plan.pk), "status__exact": ApprovalStatus.PENDING})
        )
        return format_html('<a href="{}">{} pending</a>', url, count)

    @admin.display(description="age", ordering="created_at")
    def age(self, plan: Plan) -> str:
        return timesince(plan.created_at, depth=1)

    @admin.display(description="metadata")
    def metadata_json(self, plan: Plan) -> SafeString:
        return pretty_json(plan.metadata)

    @admin.display(description="all subtasks")
    def subtask_list(self, plan: Plan) -> SafeString:
        url = reverse("admin:plans_subtask_changelist") + "?" + urlencode({"plan__id__exact": str(plan.pk)})
        return format_html('<a href="{}">{} subtasks</a>', url, plan.subtask_count)

    @admin.display(description="picture")
    def dag_picture(self, plan: Plan) -> SafeString:
        return plan_picture(plan)

    @admin.display(description="revisions")
    def revision_history(self, plan: Plan) -> SafeString:
        latest = list(plan.revisions.select_related("author").order_by("-revision")[: REVISIONS_SHOWN + 1])
        # One more than shown: the diff of the oldest shown is from the one before it.
        return revisions_history(latest[::-1], total=plan.revision, shown=REVISIONS_SHOWN)

    @admin.display(description="transitions")
    def transition_history(self, plan: Plan) -> SafeString | str:
        execution = execution_of(plan)
        if execution is None:
            return "Not started."
        rows = execution.transitions.order_by("id")[:TRANSITIONS_SHOWN]
        return history_table(
            ["time", "change", "reason", "actor"],
            (
                (
                    moment(row.created_at),
                    format_html("{} → {}", badge(row.from_state), badge(row.to_state)),
                    row.reason,
                    row.actor,
                )
                for row in rows
            ),
        )

    @admin.display(description="events")
    def event_log(self, plan: Plan) -> SafeString | str:
        events = list(plan.events.order_by("-seq")[:EVENTS_SHOWN])
        if not events:
            return "No events."
        table = history_table(
            ["#", "time", "type", "payload"],
            (
                (
                    event.seq,
                    moment(event.created_at),
                    event.type,
                    pretty_json({k: v for k, v in event.payload.items() if k != "plan_id"}, limit=400),
                )
                for event in events
            ),
        )
        url = reverse("admin:execution_event_changelist") + "?" + urlencode({"plan__id__exact": str(plan.pk)})
        return format_html(
            '<p>The latest {} of {} events, newest first. <a href="{}">All events</a></p>{}',
            len(events),
            plan.last_event_seq,
            url,
            table,
        )

    # --- operator actions: each calls the same service the API calls

    def get_urls(self) -> list:
        urls = super().get_urls()
        operate = self.admin_site.admin_view(self.operate_view)
        return [path("<path:object_id>/operate/<str:name>/", operate, name="plans_plan_operate"), *urls]

    def operate_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        plan = self.get_object(request, unquote(object_id))
        if plan is None:
            messages.warning(request, "That plan does not exist, or you may not see it.")
            return HttpResponseRedirect(reverse("admin:plans_plan_changelist"))
        if name not in OPERATIONS:
            messages.error(request, f"Unknown action {name!r}.")
        else:
            perform_and_report(
                request,
                [plan],
                name,
                reason=request.POST.get("reason", ""),
                key=request.POST.get("key", ""),
                revision=request.POST.get("revision", ""),
            )
        return HttpResponseRedirect(reverse("admin:plans_plan_change", args=[plan.pk]))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        plan = self.get_object(request, unquote(object_id))
        if plan is not None:
            failed = list(plan.subtasks.filter(status=S.FAILED).values_list("key", flat=True))
            extra_context = {
                **(extra_context or {}),
                "operations": operations_for(request.user, plan, failed_keys=failed),
                "failed_keys": failed,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def _selected(self, request: HttpRequest, queryset: QuerySet[Plan], name: str) -> None:
        perform_and_report(request, queryset, name, reason=request.POST.get("reason", ""))

    @admin.action(description="Approve selected draft plans")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        self._selected(request, queryset, "approve")

    @admin.action(description="Execute selected approved plans")
    def execute_selected(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        self._selected(request, queryset, "execute")

    @admin.action(description="Cancel selected plans (with the reason)")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        self._selected(request, queryset, "cancel")

    @admin.action(description="Retry the failed subtasks of selected plans")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        self._selected(request, queryset, "retry")
