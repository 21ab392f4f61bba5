"""api/model_serializers.py: fields mapped from the model once per class, each serializer with copies of its own."""

import copy

import pytest
from rest_framework import serializers

from api.approvals.serializers import ApprovalSerializer
from api.model_serializers import ModelSerializer
from approvals.models import Approval
from execution.services import plan_submit
from tests.api.test_approvals import waiting_tool_call
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db


# The same serializer on DRF's own class: what ours must show, field for field.
PlainApprovalSerializer = type(
    "PlainApprovalSerializer",
    (serializers.ModelSerializer,),
    {**copy.deepcopy(ApprovalSerializer._declared_fields), "Meta": ApprovalSerializer.Meta},
)


def test_an_approval_shows_as_drf_maps_it(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), requires_approval=False))
    asked = waiting_tool_call(plan, arguments={"path": "a.txt"})
    approval = Approval.objects.select_related("plan", "subtask").get(pk=asked.pk)
    assert ApprovalSerializer(approval).data == PlainApprovalSerializer(approval).data
    assert ApprovalSerializer(approval).data == PlainApprovalSerializer(approval).data  # mapped once, shown again


def test_each_serializer_gets_fields_of_its_own_bound_to_it():
    first, second = ApprovalSerializer(), ApprovalSerializer()
    assert first.fields["status"] is not second.fields["status"]
    assert first.fields["status"].parent is first
    assert second.fields["status"].parent is second
    assert type(first.fields["status"]) is type(PlainApprovalSerializer().fields["status"])


def test_no_two_serializers_share_a_nested_serializer_or_a_child():
    # Plain fields are shallow copies; a nested serializer or a ListField binds its child to
    # itself, so those are copied whole: a child shared would point at another request's parent.
    first, second = ApprovalSerializer(), ApprovalSerializer()
    for name in ("votes", "approvers", "policy"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
    assert first.fields["votes"].child is not second.fields["votes"].child
    assert first.fields["votes"].child.parent is first.fields["votes"]
    assert first.fields["approvers"].child is not second.fields["approvers"].child
    assert first.fields["approvers"].child.parent is first.fields["approvers"]
    vote_user = first.fields["votes"].child.fields["user"]
    assert vote_user is not second.fields["votes"].child.fields["user"]
    assert vote_user.parent is first.fields["votes"].child


def test_the_mapping_is_kept_per_class():
    class Listed(ModelSerializer):
        class Meta:
            model = Approval
            fields = ["id", "status"]

    class Fewer(Listed):
        class Meta:
            model = Approval
            fields = ["id"]

    assert list(Listed().fields) == ["id", "status"]
    assert list(Fewer().fields) == ["id"]
    assert list(Listed().fields) == ["id", "status"]
