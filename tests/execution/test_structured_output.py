"""Structured output: the schema checks, and the openai agent's one corrective round against the fake server."""

import json

import pytest

from execution.agents.base import Fail, Finish
from execution.agents.definitions import agent_from_definition
from execution.agents.structured_output import output_problem, schema_of, schema_problem
from tests.fakes.openai_server import completion
from tests.support.agent_contexts import context

REVIEW = {
    "type": "object",
    "properties": {"verdict": {"enum": ["ok", "fix"]}, "notes": {"type": "string"}},
    "required": ["verdict", "notes"],
    "additionalProperties": False,
}
GOOD = {"verdict": "ok", "notes": "Reads well."}


@pytest.fixture
def reviewer(fake_openai):
    return agent_from_definition("reviewer", fake_openai.agent_definition(output_schema=REVIEW))


def test_an_answer_matching_the_schema_is_the_output():
    assert output_problem(json.dumps(GOOD), REVIEW) == (GOOD, "")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("The verdict is ok", "not JSON"),
        ('{"verdict": "maybe", "notes": ""}', "'maybe' is not one of ['ok', 'fix'] (at verdict)"),
        ('{"verdict": "ok"}', "'notes' is a required property (at the top level)"),
    ],
)
def test_an_answer_that_does_not_fit_is_refused_naming_the_problem(content, problem):
    output, found = output_problem(content, REVIEW)
    assert output is None
    assert problem in found


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ([], "must be a JSON Schema"),
        ({"type": "array"}, "must describe an object"),
        ({"type": "object", "properties": 3}, "is not a valid JSON Schema"),
    ],
)
def test_an_output_schema_must_be_a_json_schema_of_an_object(schema, problem):
    assert problem in schema_problem(schema)


def test_the_subtasks_input_schema_replaces_the_agents():
    own = {"type": "object"}
    assert schema_of({"output_schema": REVIEW}, own) is REVIEW
    assert schema_of({"other": 1}, own) is own
    assert schema_of({}, None) is None


def test_the_model_is_asked_for_the_schema_and_a_valid_answer_becomes_output(reviewer, fake_openai):
    fake_openai.script(completion(json.dumps(GOOD)))

    step = reviewer.run(context())

    assert isinstance(step, Finish)
    assert step.result["output"] == GOOD
    assert step.result["content"] == json.dumps(GOOD)
    assert step.result["steps"] == 1
    assert fake_openai.requests()[0]["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": REVIEW, "strict": True},
    }


def test_one_answer_that_does_not_fit_is_sent_back_once_and_the_next_one_counts(reviewer, fake_openai):
    fake_openai.script(completion('{"verdict": "ok"}'), completion(json.dumps(GOOD)))

    step = reviewer.run(context())

    assert isinstance(step, Finish)
    assert step.result["output"] == GOOD
    assert step.result["steps"] == 2
    correction = step.conversation[-2]
    assert correction["role"] == "user"
    assert "'notes' is a required property" in correction["content"]
    assert fake_openai.requests()[1]["body"]["messages"][-1] == correction


def test_a_second_answer_that_does_not_fit_fails_the_subtask_saying_why(reviewer, fake_openai):
    fake_openai.script(completion("not json"), completion('{"verdict": "maybe", "notes": ""}'))

    step = reviewer.run(context())

    assert isinstance(step, Fail)
    assert "does not match output_schema" in step.error
    assert "'maybe' is not one of" in step.error
    assert len(fake_openai.requests()) == 2


def test_a_subtask_input_schema_is_used_instead_of_the_agents(fake_openai):
    agent = agent_from_definition("free", fake_openai.agent_definition())
    fake_openai.script(completion('{"n": 3}'))

    step = agent.run(context(input={"output_schema": {"type": "object", "required": ["n"]}}))

    assert step.result["output"] == {"n": 3}
    assert fake_openai.requests()[0]["body"]["response_format"]["json_schema"]["schema"]["required"] == ["n"]


def test_without_a_schema_the_answer_is_free_text(fake_openai):
    agent = agent_from_definition("free", fake_openai.agent_definition())
    fake_openai.script(completion("plain words"))

    step = agent.run(context())

    assert "output" not in step.result
    assert "response_format" not in fake_openai.requests()[0]["body"]


def test_a_bad_output_schema_stops_the_definition_and_a_bad_input_schema_the_plan(fake_openai):
    with pytest.raises(ValueError, match='"output_schema" must describe an object'):
        agent_from_definition("bad", fake_openai.agent_definition(output_schema={"type": "string"}))
    agent = agent_from_definition("free", fake_openai.agent_definition())
    assert agent.validate_input({"output_schema": "x"}) == ["input.output_schema must be a JSON Schema (an object)."]
    assert agent.validate_input({"output_schema": REVIEW}) == []
