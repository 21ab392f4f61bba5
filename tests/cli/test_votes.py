"""What the command line shows of an approval's votes: "1 of 2 approvals" and who voted."""

import json

import pytest
from django.contrib.auth.models import Group

from approvals.services import approval_decide
from cli.console import snapshot, votes_text
from execution.services import plan_submit
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db


def test_an_approval_of_a_quorum_shows_its_approving_voters(settings, tmp_path):
    path = tmp_path / "policy.json"
    rule = {"name": "leads", "match": {}, "decision": "ask", "approvers": ["group:leads"], "quorum": 2}
    path.write_text(json.dumps({"rules": [rule]}))
    settings.APPROVALS_POLICY_FILE = str(path)
    lead = UserFactory(username="lead1")
    Group.objects.create(name="leads").user_set.add(lead)
    owner = UserFactory()
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = plan.approvals.get()
    assert str(votes_text(approval)) == "0 of 2 approvals"

    approval_decide(approval_id=approval.pk, decided_by=lead, approve=True)

    state = snapshot(plan_ids=[plan.pk], user=lead)
    assert [str(votes_text(shown)) for shown in state.approvals] == ["1 of 2 approvals: lead1"]


def test_an_approval_one_vote_decides_shows_no_count():
    owner = UserFactory()
    approval = plan_submit(owner=owner, data=plan_data(subtask("a"))).approvals.get()
    assert votes_text(approval) == "—"
