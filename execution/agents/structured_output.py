"""Structured output of an openai agent: a final answer that is JSON matching a schema, checked.

The schema is the agent's option `output_schema`, or the subtask's `input.output_schema`,
which replaces it for that subtask. The model is asked for it with `response_format`
(`json_schema`, strict); its final answer is parsed and validated with `jsonschema`. An
answer that does not fit is sent back once as a user message naming the problem; the
agent fails the subtask when the answer after that correction does not fit either.
"""

import json
from typing import Any

from jsonschema import SchemaError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

# Marks the user message that sends an answer back, so the next answer is known to be the second try.
CORRECTION_PREFIX = "Your answer does not match the required output schema: "
PROBLEM_CHARS = 500


def schema_problem(schema: Any) -> str:
    """Return what is wrong with an output schema ("" when it can be used): a JSON Schema of an object."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema (an object)"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(part) for part in error.path)
        return f"is not a valid JSON Schema ({error.message}{f' at {where}' if where else ''})"
    if schema.get("type") != "object":
        return 'must describe an object ("type": "object")'
    return ""


def schema_of(task_input: Any, default: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the schema a subtask's answer must match: its input's `output_schema`, else the agent's."""
    if isinstance(task_input, dict) and isinstance(task_input.get("output_schema"), dict):
        return task_input["output_schema"]
    return default


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """Return the Chat Completions `response_format` that asks for JSON matching `schema`."""
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def output_problem(content: str, schema: dict[str, Any]) -> tuple[Any, str]:
    """Return the parsed answer and "" when it is JSON matching `schema`, else None and the problem."""
    try:
        output = json.loads(content)
    except ValueError as not_json:
        return None, f"the answer is not JSON ({not_json})"
    mismatch = best_match(validator_for(schema)(schema).iter_errors(output))
    if mismatch is not None:
        where = "/".join(str(part) for part in mismatch.absolute_path)
        return None, f"{mismatch.message[:PROBLEM_CHARS]} (at {where or 'the top level'})"
    return output, ""


def correction_text(problem: str) -> str:
    """Return the user message that sends a non-fitting answer back to the model."""
    return f"{CORRECTION_PREFIX}{problem}. Answer again with only the JSON object."


def is_correction(message: Any) -> bool:
    """Tell whether a conversation message is the correction correction_text wrote."""
    return (
        isinstance(message, dict)
        and message.get("role") == "user"
        and str(message.get("content") or "").startswith(CORRECTION_PREFIX)
    )
