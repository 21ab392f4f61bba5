"""Live answer text in one web process: a NOTIFY plan_deltas reaches every stream of its plan, once, with no id."""

import asyncio
import json

from api.stream import PlanEventHub, format_delta

DELTA = {"plan_id": "p1", "subtask_id": "s1", "subtask_key": "write", "step": 2, "delta": "Hello"}


def test_a_delta_is_an_sse_message_without_an_id_carrying_exactly_the_specified_fields():
    message = format_delta({**DELTA, "extra": "not sent"})

    lines = message.split("\n")
    assert lines[0] == "event: agent.message.delta"
    assert json.loads(lines[1].removeprefix("data: ")) == DELTA
    assert message.endswith("\n\n")
    assert not any(line.startswith("id:") for line in lines)


def test_each_stream_of_the_plan_gets_the_delta_once_and_other_plans_streams_none():
    async def scenario():
        hub = PlanEventHub()
        hub._listener = asyncio.get_running_loop().create_future()  # no database: this test feeds the hub itself
        first, second, other = hub.subscribe("p1"), hub.subscribe("p1"), hub.subscribe("p2")
        hub._delta(json.dumps(DELTA))
        hub._delta(json.dumps({**DELTA, "delta": " world"}))
        hub._delta("not json")
        woken = (first.is_set(), second.is_set(), other.is_set())
        taken = hub.deltas("p1", first), hub.deltas("p1", first), hub.deltas("p1", second), hub.deltas("p2", other)
        hub._listener.cancel()
        return woken, taken

    woken, (first, again, second, other) = asyncio.run(scenario())

    assert woken == (True, True, False)
    assert [json.loads(message.split("\n")[1][6:])["delta"] for message in first] == ["Hello", " world"]
    assert again == []
    assert second == first
    assert other == []
