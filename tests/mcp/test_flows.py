"""MCP tools through real workers: calls made at once or after a person's decision, servers that fail and come back."""

import json
import os
import signal

import pytest
from celery import current_app

from approvals.services import approval_decide
from execution.models import McpListing
from plans.models import PlanStatus, SubtaskStatus
from tests.fakes.openai_server import completion, reply, tool_call
from tests.mcp.servers import TOKEN, alive, command_line, descendants
from tests.support.factories import subtask
from tests.support.flows import finished, pending_approval, start, subtask_in, wait_for

pytestmark = pytest.mark.usefixtures("engine", "everything")


@pytest.fixture
def llm(fake_openai, test_agents, settings):
    """The fake model, with the test agents known to this process too (plans are checked where submitted)."""
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    return fake_openai


def answers(request: dict) -> dict[str, str]:
    """Return the tool messages of a model request by tool_call_id."""
    messages = request["body"]["messages"]
    return {message["tool_call_id"]: message["content"] for message in messages if message["role"] == "tool"}


def mcp_processes(cluster, *names: str) -> dict[int, str]:
    """Return the guards and servers the named workers' pool processes run, by pid."""
    found = {}
    for name in names:
        for pid in descendants(cluster[name].pid):
            command = command_line(pid)
            if "mcp_guard.py" in command or any(server in command for server in ("mcp_server_", "server-filesystem")):
                found[pid] = command
    return found


def time_servers(pool: int) -> list[int]:
    """Return the time servers a pool process runs (not their guards)."""
    commands = {pid: command_line(pid) for pid in descendants(pool)}
    return [pid for pid, command in commands.items() if "-m mcp_server_time" in command and "mcp_guard" not in command]


def busy_workers() -> list[str]:
    """Return the workers running a task now."""
    active = current_app.control.inspect(timeout=2).active() or {}
    return [worker for worker, tasks in active.items() if tasks]


def test_a_write_waits_for_its_approval_holding_no_worker_and_writes_the_edited_content(llm, test_agents):
    target = test_agents.mcp.workspace / "greeting.txt"
    calls = [
        tool_call("time__get_current_time", {"timezone": "Europe/Paris"}, id="t1"),
        tool_call("fs__write_file", {"path": str(target), "content": "hello"}, id="w1"),
    ]
    llm.script(completion(tool_calls=calls), completion("Wrote the greeting."), match="Write the greeting file")
    plan = start(subtask("greet", agent="mcp", description="Write the greeting file"))

    approval = pending_approval(plan, "greet")
    assert (approval.tool, approval.arguments) == ("fs__write_file", {"path": str(target), "content": "hello"})
    assert not target.exists()
    # The run that asked returns: the wait holds no worker.
    wait_for(lambda: busy_workers() == [], timeout=10, message="no worker to run a task")
    edited = {"path": str(target), "content": "hello, edited"}
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True, arguments=edited)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert target.read_text() == "hello, edited"
    first, second = llm.requests(match="Write the greeting file")
    told = answers(second)
    assert json.loads(told["t1"])["timezone"] == "Europe/Paris"
    assert "Successfully wrote" in told["w1"]
    assert second["body"]["tools"] == first["body"]["tools"]
    greet = plan.subtasks.get()
    assert [entry["tool"] for entry in greet.tool_calls] == ["fs__write_file"]
    assert any(entry["name"] == "fs__write_file" for entry in greet.agent_state["mcp_tools"])


def test_a_rejected_write_is_never_made_and_the_model_hears_the_reason(llm, test_agents):
    target = test_agents.mcp.workspace / "unwanted.txt"
    write = tool_call("fs__write_file", {"path": str(target), "content": "no"}, id="w1")
    llm.script(completion(tool_calls=[write]), completion("Understood."), match="Write an unwanted file")
    plan = start(subtask("unwanted", agent="mcp", description="Write an unwanted file"))

    approval = pending_approval(plan, "unwanted")
    approval_decide(
        approval_id=approval.pk, decided_by=approval.plan.owner, approve=False, reason="keep the workspace clean"
    )

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert not target.exists()
    told = answers(llm.requests(match="Write an unwanted file")[1])["w1"]
    assert "rejected" in told
    assert "keep the workspace clean" in told


def test_arguments_that_break_the_tools_schema_reach_the_model_as_an_error_and_nobody_is_asked(llm):
    sloppy = tool_call("fs__write_file", {"path": "missing-content.txt"}, id="w1")
    llm.script(completion(tool_calls=[sloppy]), completion("I will not write it."), match="Write sloppily")

    plan = finished(start(subtask("sloppy", agent="mcp", description="Write sloppily")))

    assert plan.status == PlanStatus.COMPLETED
    assert not plan.approvals.exists()
    told = answers(llm.requests(match="Write sloppily")[1])["w1"]
    assert told.startswith("Error:")
    assert "'content' is a required property" in told


def test_a_server_killed_while_its_subtask_runs_is_started_again_for_the_next_call(llm, engine):
    tokyo = tool_call("time__get_current_time", {"timezone": "Asia/Tokyo"}, id="t2")
    llm.script(
        completion(tool_calls=[tool_call("time__get_current_time", {"timezone": "UTC"}, id="t1")]),
        # The model's second answer comes late: the test kills the time server meanwhile.
        reply(completion(tool_calls=[tokyo]), delay_s=3),
        completion("Told the time twice."),
        match="Tell the time twice",
    )
    plan = start(subtask("clock", agent="mcp", description="Tell the time twice"))
    wait_for(lambda: len(llm.requests(match="Tell the time twice")) == 2, timeout=30)
    pool = int(subtask_in(plan, "clock", SubtaskStatus.RUNNING).worker.rsplit(":", 1)[1])
    killed = time_servers(pool)
    assert len(killed) == 1
    os.kill(killed[0], signal.SIGKILL)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert json.loads(answers(llm.requests(match="Tell the time twice")[2])["t2"])["timezone"] == "Asia/Tokyo"
    again = time_servers(pool)
    assert again
    assert again != killed


@pytest.mark.slow
def test_an_http_server_down_makes_the_subtask_retry_until_it_is_back_and_its_token_shows_nowhere(
    llm, everything, engine
):
    llm.script(
        completion(tool_calls=[tool_call("everything__echo", {"message": "back again"}, id="e1")]),
        completion("It answered."),
        match="Echo once the server is back",
    )
    everything.stop()
    try:
        plan = start(subtask("echo", agent="mcp_http", description="Echo once the server is back", max_retries=10))
        wait_for(lambda: plan.events.filter(type="subtask.queued", payload__reason="retrying after an error").exists())
    finally:
        everything.start()

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    echo = plan.subtasks.get()
    assert echo.attempts >= 2
    assert answers(llm.requests(match="Echo once the server is back")[1])["e1"] == "Echo: back again"
    retried = plan.events.filter(type="subtask.queued", payload__reason="retrying after an error").first()
    assert "'everything'" in retried.payload["error"]
    assert "cannot be reached" in retried.payload["error"]
    everything_said = json.dumps(list(plan.events.values_list("payload", flat=True)))
    everything_said += json.dumps([echo.conversation, echo.error, echo.tool_calls, echo.result])
    everything_said += "".join(worker.log.read_text(errors="replace") for worker in engine.workers.values())
    assert TOKEN not in everything_said


@pytest.mark.slow
@pytest.mark.faults
def test_after_a_worker_restart_between_request_and_decision_the_resume_offers_the_same_tools(llm, engine, test_agents):
    target = test_agents.mcp.workspace / "after-restart.txt"
    write = tool_call("fs__write_file", {"path": str(target), "content": "still here"}, id="w1")
    llm.script(completion(tool_calls=[write]), completion("Written after the restart."), match="Survive a restart")
    plan = start(subtask("restart", agent="mcp", description="Survive a restart"))
    approval = pending_approval(plan, "restart")
    listed = dict(McpListing.objects.filter(agent="mcp").values_list("server", "listed_at"))
    servers = mcp_processes(engine, "subtasks1", "subtasks2")
    assert servers

    for name in ("subtasks1", "subtasks2"):
        engine[name].restart()  # SIGTERM to the worker's process group, as a supervisor would
    wait_for(lambda: not any(alive(pid) for pid in servers), timeout=10, message="the old workers' MCP servers to end")
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True)

    plan = finished(plan, timeout=90)
    assert plan.status == PlanStatus.COMPLETED
    assert target.read_text() == "still here"
    first, resumed = llm.requests(match="Survive a restart")
    assert resumed["body"]["tools"] == first["body"]["tools"]
    assert dict(McpListing.objects.filter(agent="mcp").values_list("server", "listed_at")) == listed


@pytest.mark.faults
def test_a_pool_process_killed_outright_takes_its_mcp_servers_with_it(llm, engine, test_agents):
    status = {"repo_path": str(test_agents.mcp.repository)}
    llm.script(
        completion(tool_calls=[tool_call("git__git_status", status, id="g1")]),
        completion("Looked."),
        match="Look at the repository",
    )
    plan = finished(start(subtask("look", agent="mcp", description="Look at the repository")))
    assert plan.status == PlanStatus.COMPLETED
    pool = int(plan.subtasks.get().worker.rsplit(":", 1)[1])
    servers = [pid for pid in descendants(pool) if "mcp_guard.py" in command_line(pid)]
    servers += [child for guard in servers for child in descendants(guard)]
    assert servers

    os.kill(pool, signal.SIGKILL)

    wait_for(
        lambda: not any(alive(pid) for pid in servers), timeout=10, message="the pool process's MCP servers to end"
    )
