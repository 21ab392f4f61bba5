"""Plan endpoints: submit, list, read, revise, act (approve, execute, pause, resume, cancel, retry), follow.

Each action is one service call; errors become the API's error format in api/errors.py.
"""

from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import ErrorSerializer, authenticated_user, errors
from api.pagination import SUBTASKS_PAGE_PARAMETERS, subtasks_page
from api.plans.serializers import (
    CancelSerializer,
    EventSerializer,
    PlanDetailSerializer,
    PlanReviseSerializer,
    PlanSerializer,
    PlanStatusSerializer,
    PlanSubmitSerializer,
    RevisionSerializer,
    TransitionSerializer,
)
from api.renderers import EventStreamRenderer
from api.stream import SLOT_RETRY_AFTER_S, event_stream_response, last_event_id, stream_slot_take
from approvals.selectors import plans_visible_to_voters
from approvals.services import plan_approve
from execution.models import ExecState
from execution.selectors import current_subtask_keys, plan_events, plan_history, plan_progress
from execution.services import (
    plan_cancel,
    plan_execute,
    plan_pause,
    plan_resume,
    plan_revise,
    plan_submit,
    subtask_retry,
)
from plans.models import Plan, PlanStatus
from plans.selectors import can_operate, plan_revisions, plan_subtasks
from plans.shape import KEY_PATTERN

EVENTS_LIMIT = 1000


class PlanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PlanStatus.choices)
    # Exact, as stored: a form field would strip the whitespace a client's id may have.
    session_id = django_filters.CharFilter(strip=False)
    execution_state = django_filters.ChoiceFilter(field_name="execution__state", choices=ExecState.choices)

    class Meta:
        model = Plan
        fields = ["status", "session_id", "execution_state"]


class AfterSerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=EVENTS_LIMIT, default=EVENTS_LIMIT)


PLAN_ACTION_ERRORS = errors(401, 403, 404, 409)
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        'The revision read, quoted as an entity tag: "3". When the plan is at another revision the request '
        "answers 412 `stale_revision` (details.revision: the current one) and changes nothing."
    ),
)


def revisions_matched(header: str | None) -> list[int] | None:
    """Return the revisions an If-Match header names, or None when it names any ("*") or is absent.

    Entity tags are compared strongly (RFC 9110): a weak one (W/"3") names none, and so does
    anything that is not a revision number, which then matches no revision.
    """
    if header is None or header.strip() == "*":
        return None
    named = []
    for tag in header.split(","):
        value = tag.strip().removeprefix('"').removesuffix('"')
        if value.isascii() and value.isdigit() and len(value) < 10:
            named.append(int(value))
    return named


class PlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = PlanSerializer
    filterset_class = PlanFilter
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> QuerySet[Plan]:
        return plans_visible_to_voters(self.request.user).select_related("owner", "execution").order_by("-created_at")

    def _operable(self) -> Plan:
        """Return the plan if the user may act on it: 404 if unseen, 403 if only seen."""
        plan = self.get_object()
        if not can_operate(self.request.user, plan):
            raise exceptions.PermissionDenied("Only the plan's owner may do this.")
        return plan

    def _detail(self, plan_id: Any, *, status_code: int = status.HTTP_200_OK) -> Response:
        """Answer with the plan, its execution and a page of its subtasks, in four queries.

        Reading the plan shows the page `?subtasks_page` asks for; an action's answer, the first.
        """
        plan = self.get_queryset().get(pk=plan_id)
        detail_url = reverse("plan-detail", kwargs={"pk": plan.pk})
        first = self.request.method != "GET"
        page = subtasks_page(self.request, detail_url=detail_url, count=plan.subtask_count, first=first)
        subtasks, depends_on = plan_subtasks(plan, offset=page.offset, limit=page.limit)
        context = {"subtasks": subtasks, "depends_on": depends_on, "page": page}
        return Response(PlanDetailSerializer(plan, context=context).data, status=status_code)

    @extend_schema(
        summary="List plans",
        responses={200: PlanSerializer(many=True), **errors(400, 401, 404)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Submit a plan",
        request=PlanSubmitSerializer,
        responses={
            201: PlanDetailSerializer,
            **errors(400, 401, 413, 415),
            409: OpenApiResponse(
                ErrorSerializer,
                description="The submitter has PLANS_MAX_ACTIVE_PER_USER unfinished plans (too_many_active_plans).",
            ),
        },
        description=(
            "400 codes: validation_error, duplicate_key, unknown_dependency, unknown_agent, "
            "cyclic_dependencies (details.cycle), too_many_subtasks."
        ),
    )
    def create(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["A plan must be a JSON object."]})
        plan = plan_submit(owner=authenticated_user(request), data=request.data)
        response = self._detail(plan.pk, status_code=status.HTTP_201_CREATED)
        response["Location"] = reverse("plan-detail", kwargs={"pk": plan.pk})
        return response

    @extend_schema(
        summary="Read a plan with its subtasks",
        description=(
            "The subtasks in run order, a page at a time: `subtasks_count` says how many the plan has, "
            "`subtasks_next` and `subtasks_previous` link the pages around this one (null at either end). "
            "Every action that answers with the plan shows its first page."
        ),
        parameters=SUBTASKS_PAGE_PARAMETERS,
        responses={200: PlanDetailSerializer, **errors(400, 401, 404)},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._detail(self.get_object().pk)

    @extend_schema(
        summary="Revise a draft plan",
        request=PlanReviseSerializer,
        parameters=[IF_MATCH],
        responses={200: PlanDetailSerializer, **errors(400, 401, 403, 404, 409, 412, 413, 415)},
        description=(
            "The plan's owner changes a draft: any of goal, max_parallel, failure_policy, metadata and subtasks (the "
            "whole new list). The plan as revised is validated as a submission is (the same 400 codes); the other "
            "fields of a submission may be sent only as they are. An accepted change is a new revision (`revision`), "
            "emits `plan.revised`, cancels the pending plan approval and asks for a new one; a change that changes "
            "nothing makes no revision. 409 `invalid_state` unless the plan is a draft."
        ),
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        plan = self._operable()
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["The changes must be a JSON object."]})
        plan_revise(
            plan_id=plan.pk,
            author=authenticated_user(request),
            changes=request.data,
            expected_revisions=revisions_matched(request.headers.get("If-Match")),
        )
        return self._detail(plan.pk)

    @extend_schema(
        summary="The plan's revisions, oldest first, each with its diff from the one before",
        responses={200: RevisionSerializer(many=True), **errors(401, 404)},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def revisions(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        return Response(RevisionSerializer(plan_revisions(plan), many=True).data)

    @extend_schema(
        summary="Approve a draft plan",
        description="With If-Match, only the revision it names: another answers 412 `stale_revision`.",
        request=None,
        parameters=[IF_MATCH],
        responses={200: PlanDetailSerializer, **PLAN_ACTION_ERRORS, **errors(412)},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        # Who may vote on the plan's approval is the service's question (403 permission_denied with the reason).
        plan_approve(
            plan_id=plan.pk,
            user=authenticated_user(request),
            expected_revisions=revisions_matched(request.headers.get("If-Match")),
        )
        return self._detail(plan.pk)

    @extend_schema(
        summary="Start an approved plan", request=None, responses={200: PlanDetailSerializer, **PLAN_ACTION_ERRORS}
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, pk: str) -> Response:
        plan_execute(plan_id=self._operable().pk, actor=request.user.get_username())
        return self._detail(pk)

    @extend_schema(
        summary="Cancel a plan",
        request=CancelSerializer,
        responses={200: PlanDetailSerializer, **errors(400, 401, 403, 404, 409, 413, 415)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        plan = self._operable()
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        plan_cancel(plan_id=plan.pk, actor=request.user.get_username(), reason=body.validated_data.get("reason", ""))
        return self._detail(plan.pk)

    @extend_schema(
        summary="Pause a running plan", request=None, responses={200: PlanDetailSerializer, **PLAN_ACTION_ERRORS}
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        plan_pause(plan_id=self._operable().pk, actor=request.user.get_username())
        return self._detail(pk)

    @extend_schema(
        summary="Resume a paused plan", request=None, responses={200: PlanDetailSerializer, **PLAN_ACTION_ERRORS}
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        plan_resume(plan_id=self._operable().pk, actor=request.user.get_username())
        return self._detail(pk)

    @extend_schema(
        summary="Retry a failed subtask",
        request=None,
        responses={200: PlanDetailSerializer, **PLAN_ACTION_ERRORS},
        parameters=[OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=KEY_PATTERN.pattern)],
    )
    @action(detail=True, methods=["post"], url_path=rf"subtasks/(?P<key>{KEY_PATTERN.pattern})/retry")
    def retry(self, request: Request, pk: str, key: str) -> Response:
        plan = self._operable()
        subtask_retry(plan_id=plan.pk, key=key, actor=request.user.get_username())
        return self._detail(plan.pk)

    @extend_schema(summary="Progress of a plan", responses={200: PlanStatusSerializer, **errors(401, 404)})
    @action(detail=True, methods=["get"], url_path="status")
    def plan_status(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        execution = getattr(plan, "execution", None)
        return Response(
            {
                "plan_id": plan.pk,
                "status": plan.status,
                "state": execution.state if execution is not None else None,
                "progress": plan_progress(plan_id=plan.pk),
                "current_subtasks": current_subtask_keys(plan_id=plan.pk),
                "started_at": plan.started_at,
                "completed_at": plan.completed_at,
            }
        )

    @extend_schema(
        summary="The plan's status history, oldest first",
        description=(
            "While a draft, its review: each revision after the first and each request for changes (`id` null, "
            "from_state and to_state `draft`, `metadata.event` `plan.revised` or `plan.changes_requested`); then the "
            "state transitions of its execution."
        ),
        responses={200: TransitionSerializer(many=True), **errors(401, 404)},
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def history(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        page = self.paginate_queryset(plan_history(plan_id=plan.pk))  # type: ignore[arg-type]
        return self.get_paginated_response(TransitionSerializer(page, many=True).data)

    @extend_schema(
        summary="Events of a plan after a sequence number; a live stream with Accept: text/event-stream",
        description=(
            "JSON: the events with seq > after, oldest first (at most `limit`). With `Accept: text/event-stream` "
            "the response is a Server-Sent Events stream: first the events after `after` (or after the "
            "`Last-Event-ID` header when reconnecting; one that is not a sequence number is ignored), then each new "
            "event as it is committed. Each message has `id` (the seq), `event` (the type) and `data` (the event as "
            "JSON). A stream ends after EVENT_STREAM_MAX_AGE_S (the client reconnects with Last-Event-ID); a user "
            "with EVENT_STREAMS_PER_USER streams open gets 429 `throttled` for another."
        ),
        parameters=[AfterSerializer],
        responses={
            (200, "application/json"): EventSerializer(many=True),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="Server-Sent Events"),
            **errors(400, 401, 404, 429),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[JSONRenderer, EventStreamRenderer],
        pagination_class=None,
        filterset_class=None,
    )
    def events(self, request: Request, pk: str) -> Response | StreamingHttpResponse:
        plan = self.get_object()
        query = AfterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        if request.accepted_renderer.format == EventStreamRenderer.format:
            slot = stream_slot_take(authenticated_user(request).pk)
            if slot is None:
                raise exceptions.Throttled(
                    wait=SLOT_RETRY_AFTER_S,
                    detail=(
                        f"At most {settings.EVENT_STREAMS_PER_USER} live event streams per user at once "
                        "(EVENT_STREAMS_PER_USER); close one first."
                    ),
                )
            resumed = last_event_id(request.headers.get("Last-Event-ID", ""))
            return event_stream_response(plan.pk, after=after if resumed is None else resumed, slot=slot)
        events = plan_events(plan_id=plan.pk, after=after, limit=query.validated_data["limit"])
        return Response(EventSerializer(events, many=True).data)
