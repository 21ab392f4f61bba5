"""Approval endpoints: list approvals, vote to approve or reject one; the rules in force; revoke a grant."""

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import django_filters
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet, prefetch_related_objects
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.approvals.serializers import (
    ApprovalSerializer,
    ApproveSerializer,
    BulkDecisionSerializer,
    BulkResultSerializer,
    PolicyDocumentSerializer,
    RejectSerializer,
)
from api.errors import authenticated_user, error_body, errors
from approvals.bulk import approvals_decide_many
from approvals.grants import GrantNotFound, grant_revoke
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Vote
from approvals.policy import policy_rules
from approvals.rules import rules_describe
from approvals.selectors import approvals_awaiting, approvals_visible_to
from approvals.services import approval_decide
from common.errors import DomainError


class ApprovalFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    plan = django_filters.UUIDFilter(field_name="plan_id")
    session_id = django_filters.CharFilter(field_name="plan__session_id", strip=False)
    kind = django_filters.ChoiceFilter(choices=ApprovalKind.choices)
    awaiting = django_filters.ChoiceFilter(
        choices=[("me", "me")], method="awaiting_me", label="me: the pending approvals the caller may still vote on"
    )

    class Meta:
        model = Approval
        fields = ["status", "plan", "session_id", "kind", "awaiting"]

    def awaiting_me(self, queryset: QuerySet[Approval], name: str, value: str) -> QuerySet[Approval]:
        user = self.request.user if self.request is not None else None
        if not isinstance(user, User):
            return queryset.none()
        return approvals_awaiting(user, queryset)


class ApprovalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Approvals of the user's plans, and those whose rule names them as approvers (deciders see all); 404 else."""

    serializer_class = ApprovalSerializer
    filterset_class = ApprovalFilter
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> QuerySet[Approval]:
        return (
            approvals_visible_to(self.request.user)
            .select_related("plan", "subtask", "decided_by")
            .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("user")))
            .order_by("requested_at")
        )

    def _url_id(self) -> uuid.UUID:
        try:
            return uuid.UUID(self.kwargs["pk"])
        except ValueError:
            raise NotFound() from None

    @contextmanager
    def _hidden_as_not_found(self) -> Iterator[None]:
        """Answer 404 instead of any refusal (a bad body, a decided approval, a 403) if the caller may not see it.

        A vote reads who may see the approval only when it is refused: a vote that counts costs no query for it.
        """
        try:
            yield
        except (APIException, DomainError):
            visible = approvals_visible_to(self.request.user).filter(pk=self._url_id())
            if not visible.exists():
                raise NotFound() from None
            raise

    @extend_schema(
        summary="List approvals, oldest first", responses={200: ApprovalSerializer(many=True), **errors(400, 401, 404)}
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="Read an approval", responses={200: ApprovalSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        summary="Vote to approve, optionally with edited arguments and the tool's result",
        description=(
            "Records the caller's vote; the approval is decided when the distinct approving voters reach its `quorum` "
            "(until then it stays `pending`). 403 `permission_denied` with `details.reason` `not_an_approver` or "
            "`requester_cannot_approve`; 409 `already_voted` or `already_decided`. `remember` (`plan` or `session`, a "
            "tool call one person decides) approves the agent's later calls of the tool at once (the plan's `grants`)."
        ),
        request=ApproveSerializer,
        responses={200: ApprovalSerializer, **errors(400, 401, 403, 404, 409, 413, 415)},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        with self._hidden_as_not_found():
            decision = ApproveSerializer.decision_of(request.data)
            decided = approval_decide(
                approval_id=self._url_id(), decided_by=authenticated_user(request), approve=True, **decision
            )
        return Response(_shown(decided))

    @extend_schema(
        summary="Vote on many approvals at once, each as by its own endpoint, independently",
        request=BulkDecisionSerializer,
        responses={200: BulkResultSerializer, **errors(400, 401, 413, 415)},
    )
    @action(detail=False, methods=["post"])
    def decide(self, request: Request) -> Response:
        body = BulkDecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        decisions = [
            {**decision, "approve": decision["decision"] == "approve"} for decision in body.validated_data["decisions"]
        ]
        outcomes = approvals_decide_many(user=authenticated_user(request), decisions=decisions)
        results = []
        for decision, (status, error) in zip(decisions, outcomes, strict=True):
            entry: dict[str, Any] = {"id": decision["id"], "status": status}
            if error is not None:
                entry["error"] = error_body(error.code, error.message, error.details)["error"]
            elif status is None:
                entry["error"] = error_body("not_found", "Not found.")["error"]
            results.append(entry)
        return Response({"results": results})

    @extend_schema(
        summary="Reject, with a reason; or send a plan back for changes",
        description=(
            "With `request_changes: true` (plan approvals only; 400 `validation_error` for a tool call) the plan stays "
            "a draft and `plan.changes_requested` is emitted with the reason; its owner revises it, which asks for a "
            "new approval, or cancels it."
        ),
        request=RejectSerializer,
        responses={200: ApprovalSerializer, **errors(400, 401, 403, 404, 409, 413, 415)},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        with self._hidden_as_not_found():
            body = RejectSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            decided = approval_decide(
                approval_id=self._url_id(),
                decided_by=authenticated_user(request),
                approve=False,
                reason=body.validated_data["reason"],
                request_changes=body.validated_data["request_changes"],
            )
        return Response(_shown(decided))


# One ApprovalSerializer per request thread shows the approvals votes decide: DRF builds a
# serializer's fields (copies of the class's, the nested ones deep-copied) for each instance,
# half the time of showing one approval, and to_representation depends only on the approval.
_showing = threading.local()


def _shown(approval: Approval) -> Any:
    """Return a voted-on approval as a vote answers it: as it was read and decided, with its votes."""
    if "votes" not in getattr(approval, "_prefetched_objects_cache", {}):  # a quorum of one's vote came with it
        prefetch_related_objects([approval], Prefetch("votes", queryset=Vote.objects.select_related("user")))
    serializer = getattr(_showing, "serializer", None)
    if serializer is None:
        serializer = _showing.serializer = ApprovalSerializer()
    return serializer.to_representation(approval)


class PolicyView(APIView):
    """The approval rules in force (staff only): APPROVALS_POLICY_FILE's, in the order they are matched."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="The approval rules in force, in the order they are matched (staff only)",
        responses={200: PolicyDocumentSerializer, **errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response({"file": settings.APPROVALS_POLICY_FILE or None, "rules": rules_describe(policy_rules())})


class GrantView(APIView):
    """A grant (a remembered tool call, listed in its plan's `grants`): revoked by the plan's owner or a decider."""

    @extend_schema(
        summary="Revoke a grant: the tool's later calls are asked for again",
        description=(
            "The plan's owner or a decider (`approvals.decide_approval`); a designated approver who sees the plan gets "
            "403 `permission_denied`, anyone else 404. Calls the grant approved stay approved."
        ),
        responses={204: None, **errors(401, 403, 404)},
    )
    def delete(self, request: Request, pk: str) -> Response:
        try:
            grant_id = uuid.UUID(pk)
        except ValueError:
            raise GrantNotFound() from None
        grant_revoke(grant_id=grant_id, user=authenticated_user(request))
        return Response(status=204)
