"""Admin for approvals: the queue of pending decisions; approve, reject or send a plan back, with a reason, edited
arguments, a result; beside a plan approval, what its revision changed and the plan's picture."""

import uuid
from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import User
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from approvals.errors import AlreadyDecided, AlreadyVoted, ChangesNotApplicable, VoteInvalid, VoteRefused
from approvals.models import QUEUE_ORDER, Approval, ApprovalKind, ApprovalStatus, Channel, Vote, VoteDecision
from approvals.policy import policy_rules
from approvals.rules import rules_describe
from approvals.selectors import approvals_awaiting, approvals_visible_to, can_decide
from approvals.services import approval_decide
from desk.access import StaffReadOnly
from desk.admin.plans import plan_picture
from desk.display import badge, json_text, plan_link, pretty_json, subtask_link
from desk.forms import DecisionForm
from desk.revisions import change_requests, diff_from_previous
from execution.transitions import TransitionNotAllowed
from plans.models import PlanRevision
from plans.selectors import is_approver, plans_visible_to

# The decision form's buttons: whether each approves; "_request_changes" rejects a plan approval sending the plan back.
DECISIONS = {"_approve": True, "_reject": False, "_request_changes": False}
SEND_BACK = "_request_changes"
# Fields only a plan approval's page shows.
PLAN_ONLY = ("revision_changes", "revision_picture")
PLAN_CHOICES = 20
# The queue shows this much of a tool call's arguments; "Approve selected" approves only calls shown whole.
LIST_ARGUMENTS_LIMIT = 300


def arguments_cut(approval: Approval) -> bool:
    """Return whether the queue shows the tool call's arguments cut short."""
    return approval.kind == ApprovalKind.TOOL_CALL and len(json_text(approval.arguments)) > LIST_ARGUMENTS_LIMIT


def describe(approval: Approval) -> str:
    """Return what an approval is about, in a few words."""
    plan = Truncator(approval.plan.goal).chars(60)
    if approval.kind == ApprovalKind.PLAN:
        return f"plan “{plan}”"
    key = approval.subtask.key if approval.subtask is not None else "?"
    return f"tool call {approval.tool!r} of subtask {key!r} (plan “{plan}”)"


def approval_revision(approval: Approval) -> int:
    """Return the revision of its plan a plan approval was asked for: the current one while it is pending."""
    if approval.status == ApprovalStatus.PENDING:
        return approval.plan.revision
    # A revision asks for its approval as it is written, so the last revision written before the approval is its.
    earlier = PlanRevision.objects.filter(plan_id=approval.plan_id, created_at__lte=approval.requested_at)
    return earlier.order_by("-revision").values_list("revision", flat=True).first() or 1


def decide_and_report(
    request: HttpRequest,
    approvals: Iterable[Approval],
    *,
    approve: bool,
    reason: str = "",
    request_changes: bool = False,
    **decision: Any,
) -> int:
    """Decide each approval through the service, turning refusals into admin messages; return how many were decided."""
    decided = []
    for approval in approvals:
        if not can_decide(request.user, approval):
            messages.error(request, f"You may not decide the {describe(approval)}.")
            continue
        try:
            voted = approval_decide(
                approval_id=approval.pk,
                decided_by=request.user,  # type: ignore[arg-type]  # the admin lets in only staff
                approve=approve,
                reason=reason,
                request_changes=request_changes,
                channel=Channel.ADMIN,
                **decision,
            )
        except AlreadyDecided as error:
            messages.error(request, f"Not decided: the {describe(approval)} is already {error.status}.")
        except (TransitionNotAllowed, ChangesNotApplicable, AlreadyVoted, VoteRefused, VoteInvalid) as error:
            messages.error(request, f"Not decided: {error}")
        else:
            if voted.status == ApprovalStatus.PENDING:
                messages.info(request, f"Vote recorded: the {describe(approval)} waits for more approvals.")
            else:
                decided.append(describe(approval))
    if decided:
        verb = "Sent back for changes" if request_changes else "Approved" if approve else "Rejected"
        messages.success(request, f"{verb}: {'; '.join(decided)}." + (f" Reason: {reason}" if reason else ""))
    return len(decided)


class DecisionActionForm(ActionForm):
    reason = forms.CharField(
        required=False, label="Reason", widget=forms.TextInput(attrs={"placeholder": "reason (optional)"})
    )


class PlanFilter(admin.SimpleListFilter):
    """Plans with pending approvals (the most recent few), and the plan asked for in the URL."""

    title = "plan"
    parameter_name = "plan__id__exact"

    def _selected(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(str(self.value()))
        except ValueError:
            return None

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        visible = plans_visible_to(request.user)
        # The latest plans first, each checked for a pending approval, rather than every pending approval read.
        waiting = Approval.objects.filter(plan=OuterRef("pk"), status=ApprovalStatus.PENDING)
        plans = list(visible.filter(Exists(waiting)).order_by("-created_at").only("pk", "goal")[:PLAN_CHOICES])
        selected = self._selected()
        if selected is not None and all(plan.pk != selected for plan in plans):
            plans += list(visible.filter(pk=selected).only("pk", "goal"))
        return [(str(plan.pk), Truncator(plan.goal).chars(40)) for plan in plans]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Approval]) -> QuerySet[Approval]:
        if self.value() is None:
            return queryset
        selected = self._selected()
        return queryset.filter(plan_id=selected) if selected is not None else queryset.none()


class AwaitingFilter(admin.SimpleListFilter):
    """The pending approvals the signed-in user may still vote on (the API's ?awaiting=me)."""

    title = "awaiting"
    parameter_name = "awaiting"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("me", "awaiting my vote")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Approval]) -> QuerySet[Approval]:
        if self.value() != "me":
            return queryset
        if not isinstance(request.user, User):
            return queryset.none()
        return approvals_awaiting(request.user, queryset)


def still_to_vote(approval: Approval) -> str:
    """Return who may still vote on a pending approval, in words: named users not yet voted, groups, the defaults."""
    voted = {vote.user.get_username() for vote in approval.votes.all()}
    owner = approval.plan.owner.get_username()
    if approval.approvers is None:
        whom = ["deciders"] if approval.separate_requester or owner in voted else [owner, "deciders"]
    else:
        whom = []
        for entry in approval.approvers:
            kind, _, name = entry.partition(":")
            if kind == "group":
                whom.append(f"group {name}")
            elif name not in voted and not (approval.separate_requester and name == owner):
                whom.append(name)
    left = ", ".join(whom) or "nobody"
    return f"{left} (voted: {', '.join(sorted(voted))})" if voted else left


@admin.register(Approval)
class ApprovalAdmin(StaffReadOnly, admin.ModelAdmin):
    list_display = [
        "subject",
        "plan_goal",
        "subtask_key",
        "agent",
        "arguments_start",
        "status_badge",
        "vote_count",
        "may_still_vote",
        "policy_rule",
        "age",
        "expires",
        "decided_by",
    ]
    list_display_links = ["subject"]
    list_filter = [AwaitingFilter, "status", "kind", PlanFilter]
    list_select_related = ["plan", "plan__owner", "subtask", "decided_by"]
    search_fields = ["tool", "plan__goal", "plan__session_id", "subtask__key"]
    # The queue first: pending approvals, oldest first; then the others, latest decided first (an index's order).
    ordering = list(QUEUE_ORDER)
    action_form = DecisionActionForm
    actions = ["approve_selected", "reject_selected"]
    fields = [
        "subject",
        ("plan_goal", "subtask_key", "agent"),
        ("kind", "tool"),
        "arguments_json",
        "status_badge",
        ("requested_at", "expires_at"),
        ("decided_by", "decided_at"),
        ("policy_rule", "quorum", "channel"),
        "votes_table",
        "reason",
        "edited_arguments_json",
        "result_json",
        "revision_changes",
        "revision_picture",
    ]

    # --- who sees and decides what: the API's rules (approvals.selectors)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        # A subquery, not a join and GROUP BY: computed for the page's rows only, and left out of the counts.
        approving = (
            Vote.objects.filter(approval=OuterRef("pk"), decision=VoteDecision.APPROVE)
            .order_by()
            .values("approval")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            approvals_visible_to(request.user)
            .select_related("plan", "plan__owner", "subtask", "decided_by")
            .annotate(approve_votes=Coalesce(Subquery(approving, output_field=IntegerField()), 0))
            .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("user")))
        )

    # Approvals are created by plans and agents, and change only through a decision (StaffReadOnly).

    def get_fields(self, request: HttpRequest, obj: Approval | None = None) -> list[Any]:
        fields = list(super().get_fields(request, obj))
        if obj is None or obj.kind != ApprovalKind.PLAN:
            return [name for name in fields if name not in PLAN_ONLY]
        return fields

    def has_decide_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        """Approvers decide any approval; other staff the approvals of their own plans."""
        if obj is not None:
            return can_decide(request.user, obj)
        return is_approver(request.user) or approvals_visible_to(request.user).exists()

    # --- columns and fields

    @admin.display(description="approval")
    def subject(self, approval: Approval) -> str:
        return approval.tool if approval.kind == ApprovalKind.TOOL_CALL else "plan approval"

    @admin.display(description="plan", ordering="plan__goal")
    def plan_goal(self, approval: Approval) -> SafeString:
        return plan_link(approval.plan_id, approval.plan.goal)

    @admin.display(description="subtask", ordering="subtask__key")
    def subtask_key(self, approval: Approval) -> SafeString | str:
        if approval.subtask is None:
            return "—"
        return subtask_link(approval.subtask_id, approval.subtask.key)

    @admin.display(description="agent", ordering="subtask__agent")
    def agent(self, approval: Approval) -> str:
        return approval.subtask.agent if approval.subtask is not None else "—"

    @admin.display(description="arguments")
    def arguments_start(self, approval: Approval) -> SafeString | str:
        if approval.kind != ApprovalKind.TOOL_CALL:
            return "—"
        if arguments_cut(approval):
            return format_html(
                '{}<span class="arguments-cut">cut short: open it to read them whole and decide there</span>',
                pretty_json(approval.arguments, limit=LIST_ARGUMENTS_LIMIT),
            )
        return pretty_json(approval.arguments)

    @admin.display(description="arguments")
    def arguments_json(self, approval: Approval) -> SafeString | str:
        # Whole, however long: this page is where a call shown cut in the queue is decided.
        return pretty_json(approval.arguments) if approval.kind == ApprovalKind.TOOL_CALL else "—"

    @admin.display(description="status", ordering="status")
    def status_badge(self, approval: Approval) -> SafeString:
        return badge(approval.status)

    @admin.display(description="age", ordering="requested_at")
    def age(self, approval: Approval) -> str:
        return timesince(approval.requested_at, depth=1)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, approval: Approval) -> str:
        if approval.status != ApprovalStatus.PENDING or approval.expires_at is None:
            return "—"
        if approval.expires_at <= timezone.now():
            return "overdue"
        return f"in {timeuntil(approval.expires_at, depth=1)}"

    @admin.display(description="edited arguments")
    def edited_arguments_json(self, approval: Approval) -> SafeString | str:
        return pretty_json(approval.edited_arguments) if approval.edited_arguments is not None else "—"

    @admin.display(description="result")
    def result_json(self, approval: Approval) -> SafeString | str:
        return pretty_json(approval.result) if approval.result is not None else "—"

    @admin.display(description="what this revision changed")
    def revision_changes(self, approval: Approval) -> SafeString:
        number = approval_revision(approval)
        since = ""
        if number != approval.plan.revision:
            since = format_html(" The plan is at revision {} now.", approval.plan.revision)
        if number == 1:
            return format_html('<p class="revision-heading">Revision 1, as submitted.{}</p>', since)
        revisions = list(approval.plan.revisions.filter(revision__in=[number - 1, number]).order_by("revision"))
        asked = format_html_join("", "{}", ((change_requests(r),) for r in revisions if r.revision == number - 1))
        return format_html(
            '<p class="revision-heading">Revision {}, from revision {}:{}</p>{}{}',
            number,
            number - 1,
            since,
            asked,
            diff_from_previous(revisions, number),
        )

    @admin.display(description="the plan's subtasks")
    def revision_picture(self, approval: Approval) -> SafeString:
        plan = approval.plan
        latest = plan.revisions.filter(revision=plan.revision).values_list("diff", flat=True).first()
        changes = {}
        if latest and approval_revision(approval) == plan.revision:
            changes = {key: "changed" for key in latest["changed"]} | {key: "added" for key in latest["added"]}
        return plan_picture(plan, changes=changes)

    @admin.display(description="votes")
    def vote_count(self, approval: Approval) -> str:
        """Approving votes so far of the quorum ("1 of 2"); a single vote decides the others."""
        if approval.quorum == 1:
            return "—"
        return f"{getattr(approval, 'approve_votes', 0)} of {approval.quorum}"

    @admin.display(description="may still vote")
    def may_still_vote(self, approval: Approval) -> str:
        return still_to_vote(approval) if approval.status == ApprovalStatus.PENDING else "—"

    @admin.display(description="votes")
    def votes_table(self, approval: Approval) -> SafeString | str:
        votes = list(approval.votes.select_related("user"))
        if not votes:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (vote.user.get_username(), vote.decision, vote.reason or "—", vote.channel, vote.at.isoformat())
                for vote in votes
            ),
        )
        return format_html(
            '<table class="votes"><tr><th>voter</th><th>vote</th><th>reason</th><th>channel</th><th>at</th></tr>'
            "{}</table>",
            rows,
        )

    @admin.display(description="rule")
    def policy_rule(self, approval: Approval) -> str:
        if not approval.policy:
            return "— (no rule fitted: the defaults)"
        return f"{approval.policy['rule']} ({approval.policy['decision']})"

    # --- the rules in force, read-only (APPROVALS_POLICY_FILE is changed where it is kept, not here)

    def get_urls(self) -> list:
        policy = self.admin_site.admin_view(self.policy_view)
        return [path("policy/", policy, name="approvals_policy"), *super().get_urls()]

    def policy_view(self, request: HttpRequest) -> HttpResponse:
        rules = [
            {**rule, "match_json": json_text(rule["match"]), "position": position}
            for position, rule in enumerate(rules_describe(policy_rules()), start=1)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Approval policy: the rules in force, in the order they are matched",
            "opts": self.model._meta,
            "file": settings.APPROVALS_POLICY_FILE,
            "rules": rules,
        }
        return TemplateResponse(request, "admin/approvals/policy.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        title = "Approvals: the pending ones first, oldest first"
        return super().changelist_view(request, {"title": title, **(extra_context or {})})

    # --- deciding: the same service call as the API's approve and reject

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        decision = next((name for name in DECISIONS if name in request.POST), None)
        form = None
        if approval is not None and self.has_decide_permission(request, approval):
            if decision is not None or approval.status == ApprovalStatus.PENDING:
                form = DecisionForm(request.POST if decision else None, approval=approval)
            if decision is not None and form is not None and form.is_valid():
                sending_back = decision == SEND_BACK
                if sending_back and not form.cleaned_data.get("reason", "").strip():
                    form.add_error("reason", "Say what should change: the plan's owner revises it from this.")
                else:
                    decide_and_report(
                        request,
                        [approval],
                        approve=DECISIONS[decision],
                        request_changes=sending_back,
                        **form.decision(approve=DECISIONS[decision]),
                    )
                    return HttpResponseRedirect(
                        reverse("admin:approvals_approval_changelist") + f"?status__exact={ApprovalStatus.PENDING}"
                    )
        elif approval is not None and decision is not None:
            messages.error(request, f"You may not decide the {describe(approval)}.")
            return HttpResponseRedirect(request.path)
        if request.method == "POST":
            # The page itself is view-only: show it again (as for a GET) with the form's errors.
            request.method = "GET"
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "decision_form": form})

    @admin.action(description="Approve selected (with the reason)", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        """Approve what the queue showed whole; a call whose arguments it cut is decided on its own page."""
        shown_whole = []
        for approval in queryset:
            if arguments_cut(approval):
                messages.error(
                    request,
                    f"Not approved: the arguments of the {describe(approval)} are longer than the list shows; "
                    "open it, read them whole and decide there.",
                )
            else:
                shown_whole.append(approval)
        decide_and_report(request, shown_whole, approve=True, reason=request.POST.get("reason", ""))

    @admin.action(description="Reject selected (with the reason)", permissions=["decide"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        decide_and_report(request, queryset, approve=False, reason=request.POST.get("reason", ""))
