"""Serializers for approvals and the bodies of decisions."""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from api.model_serializers import ModelSerializer
from approvals.models import Approval, GrantScope, Vote, VoteDecision
from plans.json_values import json_problem


class VoteSerializer(ModelSerializer):
    user = serializers.CharField(source="user.get_username", help_text="The voter's username.")

    class Meta:
        model = Vote
        fields = ["user", "decision", "reason", "channel", "at"]


class PolicySerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="The name of the rule that fitted.")
    decision = serializers.ChoiceField(choices=["allow", "deny", "ask"])


class ApprovalSerializer(ModelSerializer):
    plan = serializers.UUIDField(source="plan_id")
    plan_goal = serializers.CharField(source="plan.goal")
    session_id = serializers.CharField(source="plan.session_id")
    subtask = serializers.UUIDField(source="subtask_id", allow_null=True)
    subtask_key = serializers.CharField(source="subtask.key", allow_null=True, default=None)
    decided_by = serializers.CharField(source="decided_by.get_username", allow_null=True, default=None)
    arguments = serializers.JSONField()
    edited_arguments = serializers.JSONField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    votes = VoteSerializer(many=True, read_only=True)
    approvers = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text='"user:<name>" and "group:<name>" who may vote; null: the plan\'s owner and the deciders.',
    )
    policy = PolicySerializer(allow_null=True, help_text="The rule that fitted, or null.")
    channel = serializers.CharField(
        help_text="Where the deciding act came from: api, admin, cli, policy, expiry, grant; empty while pending."
    )

    class Meta:
        model = Approval
        fields = [
            "id",
            "plan",
            "plan_goal",
            "session_id",
            "subtask",
            "subtask_key",
            "kind",
            "tool",
            "arguments",
            "status",
            "requested_at",
            "expires_at",
            "decided_by",
            "decided_at",
            "reason",
            "edited_arguments",
            "result",
            "votes",
            "quorum",
            "approvers",
            "separate_requester",
            "policy",
            "channel",
        ]


class ApproveSerializer(serializers.Serializer):
    arguments = serializers.DictField(
        required=False, allow_null=True, help_text="The tool call's arguments, edited; omit to keep them."
    )
    result = serializers.JSONField(required=False, allow_null=True, help_text="The tool's output, handed to the agent.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    remember = serializers.ChoiceField(
        choices=GrantScope.choices,
        required=False,
        allow_null=True,
        help_text=(
            'A tool call: approve the same tool\'s later calls by the same agent at once, in this plan ("plan") or in '
            "the owner's plans with the same session_id (\"session\"); see the plan's `grants`."
        ),
    )

    def validate_arguments(self, value: Any) -> Any:
        return _storable(value)

    def validate_result(self, value: Any) -> Any:
        return _storable(value)

    @classmethod
    def decision_of(cls, body: Any) -> dict[str, Any]:
        """Return the decision a request's body asks for; raise ValidationError (400) for a body that does not fit.

        An empty body (the usual approve) asks for the defaults: no serializer and no fields are built for it.
        """
        if isinstance(body, Mapping) and not body:
            return cls._decision({})
        serializer = cls(data=body)
        serializer.is_valid(raise_exception=True)
        return cls._decision(serializer.validated_data)

    @staticmethod
    def _decision(data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "arguments": data.get("arguments"),
            "result": data.get("result"),
            "reason": data.get("reason", ""),
            "remember": data.get("remember"),
        }


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=10_000, help_text="Why; the agent sees it.")
    request_changes = serializers.BooleanField(
        default=False,
        help_text=(
            "A plan approval only: keep the plan a draft for its owner to revise (PATCH /plans/{id}/), "
            "instead of cancelling it; the reason says what to change."
        ),
    )


def _storable(value: Any) -> Any:
    """Return a JSON value if it can be stored and handed to the agent as it is (see plans/json_values.py)."""
    problem = json_problem(value)
    if problem:
        raise serializers.ValidationError(problem)
    return value


class RuleSerializer(serializers.Serializer):
    name = serializers.CharField()
    match = serializers.DictField(help_text="kind, agent, tool, arguments, requester_group: every key given must fit.")
    decision = serializers.ChoiceField(choices=["allow", "deny", "ask"])
    reason = serializers.CharField(required=False, help_text='"deny": the reason the rejection gives.')
    approvers = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True, help_text='"ask": null for the default.'
    )
    quorum = serializers.IntegerField(required=False)
    separate_requester = serializers.BooleanField(
        required=False, allow_null=True, help_text='"ask": null for APPROVALS_SEPARATE_REQUESTER.'
    )
    expires_after_s = serializers.IntegerField(
        required=False, allow_null=True, help_text='"ask": null for APPROVALS_DEFAULT_TTL_S.'
    )
    on_expiry = serializers.ChoiceField(choices=["reject", "approve"], required=False)


class PolicyDocumentSerializer(serializers.Serializer):
    file = serializers.CharField(allow_null=True, help_text="APPROVALS_POLICY_FILE, or null when unset.")
    rules = RuleSerializer(many=True)


MAX_BULK_DECISIONS = 1000


class BulkItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    decision = serializers.ChoiceField(choices=VoteDecision.choices)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    arguments = serializers.DictField(required=False, allow_null=True, help_text="approve: the edited arguments.")
    result = serializers.JSONField(required=False, allow_null=True, help_text="approve: the tool's output.")
    remember = serializers.ChoiceField(
        choices=GrantScope.choices, required=False, allow_null=True, help_text="approve: as the approve endpoint's."
    )

    def validate_arguments(self, value: Any) -> Any:
        return _storable(value)

    def validate_result(self, value: Any) -> Any:
        return _storable(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["decision"] == "reject" and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": ["A rejection needs a reason."]})
        if attrs["decision"] == "reject" and attrs.get("remember"):
            raise serializers.ValidationError({"remember": ["Only an approving vote can remember a tool call."]})
        return attrs


class BulkDecisionSerializer(serializers.Serializer):
    decisions = serializers.ListField(child=BulkItemSerializer(), min_length=1, max_length=MAX_BULK_DECISIONS)


class BulkErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class BulkOutcomeSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField(allow_null=True, help_text="The approval's status after the vote (null: not found).")
    error = BulkErrorSerializer(required=False, help_text="Why this vote was refused, as its own endpoint answers.")


class BulkResultSerializer(serializers.Serializer):
    results = BulkOutcomeSerializer(many=True)


class GrantSerializer(serializers.Serializer):
    """A grant in force in a plan (approvals/grants.py grant_payload)."""

    id = serializers.UUIDField()
    tool = serializers.CharField()
    agent = serializers.CharField()
    scope = serializers.ChoiceField(choices=GrantScope.choices)
    created_by = serializers.CharField(allow_null=True, help_text="Who remembered the call (null: a deleted user).")
    created_at = serializers.DateTimeField()
