"""Limits on what one client can make the service do: dependencies, active plans, context, conversations, pages."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

# The submission schema is built from the settings when its module is first imported: import it
# before these tests lower the limits, so the schema keeps the configured ones.
import api.plans.serializers  # noqa: F401
from execution.agents.base import Fail, Finish, ToolCall, ToolCalls
from execution.agents.definitions import agent_from_definition
from execution.engine.runs import step_problem
from plans.models import Subtask
from plans.models import SubtaskStatus as S
from tests.api.conftest import client_for
from tests.fakes.openai_server import completion, tool_call
from tests.support.agent_contexts import TOOLS, context
from tests.support.clients import LocalCaller, at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished, start

PLANS = "/api/v1/plans/"


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


# --- PLANS_MAX_DEPENDENCIES -------------------------------------------------------------------------


def wide_plan(dependencies: int) -> dict:
    """Return a plan whose last subtask depends on `dependencies` others."""
    roots = [subtask(f"r{i}") for i in range(dependencies)]
    return plan_data(*roots, subtask("fan-in", *(each["key"] for each in roots)))


@pytest.mark.django_db
def test_a_subtask_depending_on_more_subtasks_than_allowed_is_refused(settings):
    settings.PLANS_MAX_DEPENDENCIES = 5
    api = client_for(UserFactory())
    error = error_of(api.post(PLANS, wide_plan(6), format="json"), 400)
    assert error["code"] == "validation_error"
    assert "subtasks[6].depends_on" in error["details"]
    assert "At most 5" in error["details"]["subtasks[6].depends_on"][0]
    assert api.post(PLANS, wide_plan(5), format="json").status_code == 201


@pytest.mark.django_db
def test_a_draft_revised_to_depend_on_more_subtasks_than_allowed_is_refused(settings):
    settings.PLANS_MAX_DEPENDENCIES = 5
    api = client_for(UserFactory())
    plan = api.post(PLANS, wide_plan(5), format="json").json()
    error = error_of(api.patch(f"{PLANS}{plan['id']}/", {"subtasks": wide_plan(6)["subtasks"]}, format="json"), 400)
    assert error["code"] == "validation_error"
    assert "subtasks[6].depends_on" in error["details"]
    assert api.get(f"{PLANS}{plan['id']}/").json()["revision"] == 1


# --- PLANS_MAX_ACTIVE_PER_USER ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_user_cannot_hold_more_active_plans_than_the_quota(settings):
    settings.PLANS_MAX_ACTIVE_PER_USER = 2
    api = client_for(UserFactory())
    first, second = (api.post(PLANS, plan_data(subtask("a")), format="json").json() for _ in range(2))
    error = error_of(api.post(PLANS, plan_data(subtask("a")), format="json"), 409)
    assert error["code"] == "too_many_active_plans"
    assert error["details"] == {"limit": 2, "active": 2}
    # Another user has a quota of their own.
    assert client_for(UserFactory()).post(PLANS, plan_data(subtask("a")), format="json").status_code == 201
    # A finished plan no longer counts.
    assert api.post(f"{PLANS}{first['id']}/cancel/", {}, format="json").status_code == 200
    assert api.post(PLANS, plan_data(subtask("a")), format="json").status_code == 201
    assert second["status"] == "draft"


@pytest.mark.django_db
def test_the_command_line_is_held_to_the_same_quota(settings, tmp_path):
    settings.PLANS_MAX_ACTIVE_PER_USER = 1
    UserFactory(username="dev")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_data(subtask("a"))))
    call_command("plans", "submit", str(path), "--user", "dev", stdout=io.StringIO())
    with pytest.raises(CommandError) as refused:
        call_command("plans", "submit", str(path), "--user", "dev", stdout=io.StringIO())
    assert refused.value.returncode == 2
    assert "too_many_active_plans" in str(refused.value)


@pytest.mark.django_db
def test_no_quota_of_active_plans_when_it_is_zero(settings):
    settings.PLANS_MAX_ACTIVE_PER_USER = 0
    api = client_for(UserFactory())
    assert all(api.post(PLANS, plan_data(subtask("a")), format="json").status_code == 201 for _ in range(3))


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_cannot_both_take_the_last_place_in_the_quota(settings):
    settings.PLANS_MAX_ACTIVE_PER_USER = 1
    user = UserFactory()
    callers = [LocalCaller(user) for _ in range(4)]
    answers = at_once(*(lambda caller=caller: caller.post(PLANS, plan_data(subtask("a"))) for caller in callers))
    assert sorted(answer.status for answer in answers) == [201, 409, 409, 409]
    assert {answer.code for answer in answers if answer.status == 409} == {"too_many_active_plans"}


# --- EXECUTION_MAX_CONTEXT_BYTES --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_gathering_more_dependency_results_than_allowed_fails_without_calling_its_agent(settings, worker, outbox):
    settings.EXECUTION_MAX_CONTEXT_BYTES = 1000
    big = "x" * 600  # each result is 602 bytes as JSON text; two of them are over the limit
    plan = start(
        subtask("a", input={"result": big}),
        subtask("b", input={"result": big}),
        subtask("small", input={"result": "ok"}),
        subtask("under", "a", "small", input={"echo": True}),
        subtask("over", "a", "b", input={"echo": True}, max_retries=3),
        failure_policy="continue",
    )

    worker.drain()

    over = plan.subtasks.get(key="over")
    assert (over.status, over.attempts, over.retries) == (S.FAILED, 1, 0)
    assert "1204 bytes" in over.error
    assert "EXECUTION_MAX_CONTEXT_BYTES" in over.error
    assert over.result is None
    under = plan.subtasks.get(key="under")
    assert under.status == S.DONE
    assert set(under.result["dependencies"]) == {"a", "small"}


# --- EXECUTION_MAX_CONVERSATION_BYTES and EXECUTION_MAX_TOOL_CALLS_PER_ANSWER ------------------------


@pytest.fixture
def coder(fake_openai):
    return agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS))


def test_a_model_answer_asking_for_more_tool_calls_than_allowed_fails_before_any_runs(settings, coder, fake_openai):
    settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER = 3
    reads = [tool_call("read_file", {"path": f"file{i}.txt"}) for i in range(4)]
    fake_openai.script(completion(tool_calls=reads), completion("Read them all."))

    step = coder.run(context())

    assert isinstance(step, Fail)
    assert "4 tool calls in one answer" in step.error
    assert "EXECUTION_MAX_TOOL_CALLS_PER_ANSWER" in step.error
    assert len(fake_openai.requests()) == 1  # no call was answered and the model was not asked again
    assert not any(message.get("tool_calls") for message in step.conversation or [])


def test_a_model_growing_its_conversation_past_the_limit_fails_and_the_conversation_is_not_kept(
    settings, coder, fake_openai
):
    settings.EXECUTION_MAX_CONVERSATION_BYTES = 5000
    padded = [completion(tool_calls=[tool_call("no_such_tool", {"padding": "y" * 3000})]) for _ in range(5)]
    fake_openai.script(*padded, completion("Done."))

    step = coder.run(context())

    assert isinstance(step, Fail)
    assert "EXECUTION_MAX_CONVERSATION_BYTES" in step.error
    assert step.conversation is None  # the subtask keeps the conversation it had, not the oversized one
    assert len(fake_openai.requests()) == 2


def test_an_agent_asking_for_more_tool_calls_at_once_than_allowed_is_refused_by_the_engine(settings):
    settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER = 2
    calls = ToolCalls(tuple(ToolCall(tool="write_file", arguments={}, requires_approval=True) for _ in range(3)))
    assert "EXECUTION_MAX_TOOL_CALLS_PER_ANSWER" in step_problem(calls)
    assert step_problem(ToolCalls(calls.calls[:2])) == ""


def test_an_agent_returning_a_conversation_over_the_limit_is_refused_by_the_engine(settings):
    settings.EXECUTION_MAX_CONVERSATION_BYTES = 1000
    conversation = [{"role": "user", "content": "z" * 1000}]
    problem = step_problem(Finish("ok", conversation=conversation))
    assert "EXECUTION_MAX_CONVERSATION_BYTES" in problem
    assert step_problem(Finish("ok", conversation=conversation[:0])) == ""


# --- Pages: a plan's subtasks and its history ----------------------------------------------------------


def keys(plan: dict) -> list[str]:
    return [item["key"] for item in plan["subtasks"]]


@pytest.mark.django_db
def test_reading_a_huge_plan_shows_one_page_of_its_subtasks_and_links_the_others(settings):
    settings.API_SUBTASKS_PAGE_SIZE = 3
    api = client_for(UserFactory())
    created = api.post(PLANS, plan_data(*(subtask(f"s{i}", *([f"s{i - 1}"] if i else [])) for i in range(7))))
    assert created.status_code == 201
    first = created.json()
    assert (keys(first), first["subtasks_count"], first["subtasks_previous"]) == (["s0", "s1", "s2"], 7, None)

    second = api.get(first["subtasks_next"]).json()
    assert keys(second) == ["s3", "s4", "s5"]
    assert [item["depends_on"] for item in second["subtasks"]] == [["s2"], ["s3"], ["s4"]]
    assert second["subtasks_previous"] == f"http://testserver{PLANS}{first['id']}/"
    last = api.get(second["subtasks_next"]).json()
    assert (keys(last), last["subtasks_next"], last["subtasks_count"]) == (["s6"], None, 7)
    assert api.get(f"{PLANS}{first['id']}/", {"subtasks_page_size": 7}).json()["subtasks_next"] is None


@pytest.mark.django_db
def test_a_plan_smaller_than_a_page_shows_all_its_subtasks_as_before():
    api = client_for(UserFactory())
    plan = api.post(PLANS, plan_data(subtask("a"), subtask("b", "a"))).json()
    assert (keys(plan), plan["subtasks_count"], plan["subtasks_next"], plan["subtasks_previous"]) == (
        ["a", "b"],
        2,
        None,
        None,
    )


@pytest.mark.django_db
def test_a_page_of_subtasks_past_the_end_or_malformed_is_refused(settings):
    settings.API_SUBTASKS_MAX_PAGE_SIZE = 50
    api = client_for(UserFactory())
    detail = f"{PLANS}{api.post(PLANS, plan_data(subtask('a'))).json()['id']}/"
    assert error_of(api.get(detail, {"subtasks_page": 2}), 404)["code"] == "not_found"
    for query in ({"subtasks_page": 0}, {"subtasks_page": "x"}, {"subtasks_page_size": 51}):
        error = error_of(api.get(detail, query), 400)
        assert error["code"] == "validation_error"
        assert set(error["details"]) == set(query)


@pytest.mark.django_db
def test_reading_a_huge_plan_costs_the_queries_and_rows_of_one_page(settings):
    settings.API_SUBTASKS_PAGE_SIZE = 10
    api = client_for(UserFactory())
    small = api.post(PLANS, plan_data(*(subtask(f"s{i}") for i in range(10)))).json()["id"]
    huge_plan = [subtask("root"), *(subtask(f"s{i}", "root") for i in range(2000))]
    huge = api.post(PLANS, plan_data(*huge_plan)).json()["id"]

    with CaptureQueriesContext(connection) as small_read:
        assert len(api.get(f"{PLANS}{small}/").json()["subtasks"]) == 10
    with CaptureQueriesContext(connection) as huge_read:
        body = api.get(f"{PLANS}{huge}/").json()
    assert (len(body["subtasks"]), body["subtasks_count"]) == (10, 2001)
    assert len(huge_read) == len(small_read)
    assert all("LIMIT 10" in query["sql"] for query in huge_read if 'FROM "plans_subtask"' in query["sql"])


@pytest.mark.django_db
def test_a_long_history_is_read_a_page_at_a_time():
    owner = UserFactory()
    api = client_for(owner)
    plan = api.post(PLANS, plan_data(subtask("a"), auto_execute=False)).json()
    assert api.post(f"{PLANS}{plan['id']}/approve/").status_code == 200
    api.post(f"{PLANS}{plan['id']}/execute/")
    api.post(f"{PLANS}{plan['id']}/pause/")
    api.post(f"{PLANS}{plan['id']}/cancel/")
    whole = api.get(f"{PLANS}{plan['id']}/history/").json()
    assert set(whole) == {"count", "next", "previous", "results"}
    assert whole["count"] == len(whole["results"]) >= 3

    first = api.get(f"{PLANS}{plan['id']}/history/", {"page_size": 2}).json()
    assert (first["count"], len(first["results"]), first["previous"]) == (whole["count"], 2, None)
    rest = api.get(first["next"]).json()
    read = [*first["results"], *rest["results"]]
    assert read == whole["results"][: len(read)]


@pytest.mark.django_db
def test_an_action_answers_with_the_first_page_whatever_its_query_asks():
    api = client_for(UserFactory())
    plan = api.post(PLANS, plan_data(subtask("a"))).json()
    cancelled = api.post(f"{PLANS}{plan['id']}/cancel/?subtasks_page=9&subtasks_page_size=x")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], keys(cancelled.json())) == ("cancelled", ["a"])


# --- The same bounds on real workers (limits from tests/support/cluster.py: FAST) ---------------------


@pytest.fixture
def llm(fake_openai, test_agents, settings):
    """The fake model, with the test agents known to this process too (plans are checked where submitted)."""
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    return fake_openai


def failed_on_workers(*subtasks: dict) -> Subtask:
    """Run a plan on the workers and return its subtask that failed."""
    plan = finished(start(*subtasks, failure_policy="continue"), timeout=90)
    return plan.subtasks.get(status=S.FAILED)


@pytest.mark.usefixtures("engine")
def test_on_workers_a_fan_in_gathering_more_than_the_context_limit_fails_saying_so(settings):
    near_the_result_limit = "x" * (settings.EXECUTION_MAX_RESULT_BYTES - 100)
    over = failed_on_workers(
        subtask("a", input={"result": near_the_result_limit}),
        subtask("b", input={"result": near_the_result_limit}),
        subtask("fan-in", "a", "b", input={"echo": True}),
    )
    assert over.key == "fan-in"
    assert "EXECUTION_MAX_CONTEXT_BYTES" in over.error
    assert (over.attempts, over.retries) == (1, 0)


@pytest.mark.usefixtures("engine")
def test_on_workers_a_model_answer_with_too_many_tool_calls_fails_its_subtask(llm, settings):
    many = settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER + 1
    reads = [tool_call("read_file", {"path": "notes.txt"}) for _ in range(many)]
    llm.script(completion(tool_calls=reads), completion("Read."), match="Read everything")
    over = failed_on_workers(subtask("reader", agent="llm", description="Read everything"))
    assert f"{many} tool calls in one answer" in over.error
    assert "EXECUTION_MAX_TOOL_CALLS_PER_ANSWER" in over.error
    assert len(llm.requests(match="Read everything")) == 1


@pytest.mark.usefixtures("engine")
def test_on_workers_a_model_conversation_over_the_limit_fails_its_subtask_and_is_not_stored(llm, settings):
    huge = "y" * settings.EXECUTION_MAX_CONVERSATION_BYTES
    llm.script(completion(huge), match="Talk at length")
    over = failed_on_workers(subtask("talker", agent="llm", description="Talk at length"))
    assert "EXECUTION_MAX_CONVERSATION_BYTES" in over.error
    assert over.conversation == []
