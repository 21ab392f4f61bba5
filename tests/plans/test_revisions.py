"""A plan's revisions: the diff between two contents (pure), and storing a revision of a draft (the database only)."""

import importlib
import uuid

import pytest
from django.apps import apps

from plans.models import PlanRevision, SubtaskDependency
from plans.revisions import content_diff, fixed_fields_changed, same_json, spec_content
from plans.services import plan_content, plan_revision_store, revision_changes_request
from plans.validation import validate_plan
from tests.support.factories import UserFactory, draft_plan, plan_data, subtask

AGENTS = {"script", "coder"}


def content(*subtasks, **fields):
    return spec_content(validate_plan(plan_data(*subtasks, **fields), agents=AGENTS))


def test_added_removed_and_changed_keys_follow_the_lists_order():
    old = content(subtask("a"), subtask("b"), subtask("c"), subtask("z"))
    new = content(subtask("d"), subtask("c", description="Other"), subtask("a"), subtask("b", agent="coder"))

    assert content_diff(old, new) == {
        "added": ["d"],
        "removed": ["z"],
        "changed": ["c", "b"],
        "subtask_fields": {"c": ["description"], "b": ["agent"]},
        "plan_fields": [],
    }


def test_each_compared_field_of_a_subtask_is_named_when_it_changes():
    old = content(subtask("a"), subtask("b"))
    new = content(
        subtask("a"),
        subtask("b", "a", agent="coder", description="New", input={"result": 1}, max_retries=0, timeout_s=5),
    )
    assert content_diff(old, new)["subtask_fields"] == {
        "b": ["description", "agent", "depends_on", "input", "max_retries", "timeout_s"]
    }


def test_dependencies_compare_as_sets_and_json_as_json():
    old = content(subtask("a"), subtask("b"), subtask("c", "a", "b", input={"result": 1}))
    reordered = content(subtask("a"), subtask("b"), subtask("c", "b", "a", input={"result": 1}))
    assert content_diff(old, reordered)["changed"] == []
    # 1 == True in Python, not in JSON.
    flagged = content(subtask("a"), subtask("b"), subtask("c", "a", "b", input={"result": True}))
    assert content_diff(old, flagged)["subtask_fields"] == {"c": ["input"]}
    assert not same_json({"a": 1}, {"a": True})
    assert same_json({"a": 1, "b": [1]}, {"b": [1], "a": 1})


def test_the_plans_own_fields_are_named_when_they_change():
    old = content(subtask("a"))
    new = content(subtask("a"), goal="Other", max_parallel=1, failure_policy="continue", metadata={"v": 2})
    assert content_diff(old, new)["plan_fields"] == ["goal", "max_parallel", "failure_policy", "metadata"]
    assert content_diff(old, old) == {
        "added": [],
        "removed": [],
        "changed": [],
        "subtask_fields": {},
        "plan_fields": [],
    }


def test_only_the_revisable_fields_may_change():
    old = content(subtask("a"), session_id="s1")
    assert fixed_fields_changed(old, content(subtask("b"), session_id="s1", goal="New", max_parallel=9)) == {}
    assert list(fixed_fields_changed(old, content(subtask("a"), session_id="s2", auto_execute=False))) == [
        "session_id",
        "auto_execute",
    ]


# --- Stored ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_creating_a_plan_writes_its_revision_1():
    plan = draft_plan(None, subtask("a"), subtask("b", "a"))
    revision = PlanRevision.objects.get(plan=plan)
    assert (plan.revision, revision.revision, revision.author, revision.diff) == (1, 1, plan.owner, None)
    assert plan_content(plan) == revision.content
    assert [item["depends_on"] for item in revision.content["subtasks"]] == [[], ["a"]]


@pytest.mark.django_db
def test_a_stored_revision_replaces_the_subtasks_and_keeps_the_ids_of_kept_keys():
    plan = draft_plan(None, subtask("a"), subtask("b", "a"), subtask("c", "b"))
    before = dict(plan.subtasks.values_list("key", "pk"))
    spec = validate_plan(
        plan_data(subtask("c"), subtask("d", "c"), subtask("a", "c"), goal="New", max_parallel=1), agents=AGENTS
    )
    author = UserFactory()
    diff = content_diff(plan_content(plan), spec_content(spec))

    revision = plan_revision_store(plan=plan, spec=spec, author=author, diff=diff)

    plan.refresh_from_db()
    assert (plan.revision, plan.goal, plan.max_parallel, plan.subtask_count, plan.pending_count) == (2, "New", 1, 3, 3)
    rows = list(plan.subtasks.order_by("position").values_list("key", "pk", "batch_index", "status"))
    assert rows == [
        ("c", before["c"], 0, "pending"),
        ("d", rows[1][1], 1, "pending"),
        ("a", before["a"], 2, "pending"),
    ]
    assert rows[1][1] not in before.values()
    edges = set(SubtaskDependency.objects.filter(subtask__plan=plan).values_list("depends_on__key", "subtask__key"))
    assert edges == {("c", "d"), ("c", "a")}
    assert (revision.revision, revision.author, revision.diff) == (2, author, {"revision": 2, **diff})
    assert plan_content(plan) == spec_content(spec)


@pytest.mark.django_db
def test_changes_asked_for_are_kept_on_the_revision_they_were_made_on():
    plan = draft_plan()
    approval_id = uuid.uuid4()
    revision_changes_request(plan=plan, reason="Split a", requested_by="rev", approval_id=approval_id)
    revision_changes_request(plan=plan, reason="And b", requested_by="rev2", approval_id=approval_id)
    requests = PlanRevision.objects.get(plan=plan).change_requests
    assert [(r["reason"], r["requested_by"], r["approval_id"]) for r in requests] == [
        ("Split a", "rev", str(approval_id)),
        ("And b", "rev2", str(approval_id)),
    ]


@pytest.mark.django_db
def test_the_migration_gives_plans_made_before_revisions_their_revision_1():
    migration = importlib.import_module("plans.migrations.0006_plan_revisions")
    plan = draft_plan(
        None, subtask("a", input={"result": 1}, timeout_s=9), subtask("b", "a"), session_id="s", metadata={"m": 1}
    )
    expected = plan_content(plan)
    PlanRevision.objects.filter(plan=plan).delete()

    migration.write_first_revisions(apps, None)

    revision = PlanRevision.objects.get(plan=plan)
    assert (revision.revision, revision.author, revision.diff, revision.created_at) == (
        1,
        plan.owner,
        None,
        plan.created_at,
    )
    assert revision.content == expected
