"""Approval endpoints: list the pending and past approvals, approve or reject one."""

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.approvals.serializers import ApprovalSerializer, ApproveSerializer, RejectSerializer
from api.errors import authenticated_user, errors
from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.selectors import approvals_visible_to
from approvals.services import approval_decide


class ApprovalFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    plan = django_filters.UUIDFilter(field_name="plan_id")
    session_id = django_filters.CharFilter(field_name="plan__session_id", strip=False)
    kind = django_filters.ChoiceFilter(choices=ApprovalKind.choices)

    class Meta:
        model = Approval
        fields = ["status", "plan", "session_id", "kind"]


class ApprovalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Approvals of the user's plans (approvers see all); 404 for anyone else's."""

    serializer_class = ApprovalSerializer
    filterset_class = ApprovalFilter
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> QuerySet[Approval]:
        return (
            approvals_visible_to(self.request.user)
            .select_related("plan", "subtask", "decided_by")
            .order_by("requested_at")
        )

    @extend_schema(
        summary="List approvals, oldest first", responses={200: ApprovalSerializer(many=True), **errors(400, 401, 404)}
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="Read an approval", responses={200: ApprovalSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        summary="Approve, optionally with edited arguments and the tool's result",
        request=ApproveSerializer,
        responses={200: ApprovalSerializer, **errors(400, 401, 404, 409, 413, 415)},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        approval = self.get_object()
        body = ApproveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        decided = approval_decide(
            approval_id=approval.pk, decided_by=authenticated_user(request), approve=True, **body.decision()
        )
        return Response(ApprovalSerializer(decided).data)

    @extend_schema(
        summary="Reject, with a reason; or send a plan back for changes",
        description=(
            "With `request_changes: true` (plan approvals only; 400 `validation_error` for a tool call) the plan stays "
            "a draft and `plan.changes_requested` is emitted with the reason; its owner revises it, which asks for a "
            "new approval, or cancels it."
        ),
        request=RejectSerializer,
        responses={200: ApprovalSerializer, **errors(400, 401, 404, 409, 413, 415)},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        approval = self.get_object()
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        decided = approval_decide(
            approval_id=approval.pk,
            decided_by=authenticated_user(request),
            approve=False,
            reason=body.validated_data["reason"],
            request_changes=body.validated_data["request_changes"],
        )
        return Response(ApprovalSerializer(decided).data)
