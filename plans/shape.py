"""The shape of a submitted plan, declared once: validation, the API schema and the model constraints read it.

Pure data: no ORM, no Celery. Limits that operators configure (sizes, the longest time
limit) come in as a Limits value; the fixed ones are the constants below.
"""

import re
from dataclasses import dataclass
from typing import Any

MAX_PARALLEL_LIMIT = 64
DEFAULT_MAX_PARALLEL = 3
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES_LIMIT = 100
KEY_MAX_LENGTH = 100
AGENT_MAX_LENGTH = 64
SESSION_ID_MAX_LENGTH = 255
CALLBACK_URL_MAX_LENGTH = 2000
FAILURE_POLICIES = ("fail_fast", "continue")
# How deep JSON a client sends (input, metadata, a tool call's arguments and result) may nest:
# far more than any real document needs, far less than the recursion limits of the encoders
# that store it and render it again.
MAX_JSON_DEPTH = 64
# A whole request body may nest twice as deep (room for the envelope around those values);
# anything deeper is refused before it reaches code that recurses.
MAX_BODY_DEPTH = 2 * MAX_JSON_DEPTH
# Keys appear in URLs (/plans/{id}/subtasks/{key}/retry/), so keep them path-safe.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


@dataclass(frozen=True)
class Limits:
    """Sizes a plan may not exceed (from settings)."""

    max_subtasks: int = 10_000
    max_goal_length: int = 10_000
    max_description_length: int = 10_000
    max_timeout_s: int = 1800
    max_dependencies: int = 100


@dataclass(frozen=True)
class Field:
    """One field of a submission: its kind, whether it is required, its default and its limits.

    Kinds: text, integer, boolean, choice, object, url, keys (a list of subtask keys) and
    subtasks (the list of subtask objects, at most `max_items`).
    """

    name: str
    kind: str
    help: str = ""
    required: bool = False
    default: Any = None
    blank: bool = False
    nullable: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    max_items: int | None = None

    def initial(self) -> Any:
        """Return the value the field takes when a submission leaves it out (a fresh copy)."""
        return type(self.default)(self.default) if isinstance(self.default, dict | list) else self.default


def subtask_fields(limits: Limits) -> tuple[Field, ...]:
    """Return the fields of one submitted subtask."""
    return (
        Field(
            "key",
            "text",
            "Unique within the plan; letters, digits and _ . : - only.",
            required=True,
            max_length=KEY_MAX_LENGTH,
            pattern=f"^{KEY_PATTERN.pattern}$",
        ),
        Field(
            "description", "text", "What the subtask is to do.", required=True, max_length=limits.max_description_length
        ),
        Field("agent", "text", "A registered agent (GET /agents/).", required=True, max_length=AGENT_MAX_LENGTH),
        Field(
            "depends_on",
            "keys",
            "Keys of other subtasks of the plan.",
            default=[],
            max_items=limits.max_dependencies,
        ),
        Field("input", "object", "Passed to the agent.", default={}),
        Field(
            "max_retries",
            "integer",
            "Retries after agent errors.",
            default=DEFAULT_MAX_RETRIES,
            minimum=0,
            maximum=MAX_RETRIES_LIMIT,
        ),
        Field(
            "timeout_s",
            "integer",
            "Time limit of one run in seconds; empty: the configured default.",
            nullable=True,
            minimum=1,
            maximum=limits.max_timeout_s,
        ),
    )


def plan_fields(limits: Limits) -> tuple[Field, ...]:
    """Return the fields of a submitted plan."""
    return (
        Field("goal", "text", "What the plan is for.", required=True, max_length=limits.max_goal_length),
        Field(
            "session_id",
            "text",
            "The client's conversation id.",
            default="",
            blank=True,
            max_length=SESSION_ID_MAX_LENGTH,
        ),
        Field(
            "max_parallel",
            "integer",
            "Subtasks of a batch run at once.",
            default=DEFAULT_MAX_PARALLEL,
            minimum=1,
            maximum=MAX_PARALLEL_LIMIT,
        ),
        Field(
            "failure_policy",
            "choice",
            "fail_fast: the first failure fails the plan; continue: only its dependents are skipped.",
            default="fail_fast",
            choices=FAILURE_POLICIES,
        ),
        Field("requires_approval", "boolean", "Wait for a human's approval before starting.", default=True),
        Field("auto_execute", "boolean", "Start as soon as the plan is approved.", default=True),
        Field("metadata", "object", "Anything the client wants kept with the plan.", default={}),
        Field(
            "callback_url",
            "url",
            "Receives every event (needs WEBHOOK_SECRET).",
            default="",
            nullable=True,
            max_length=CALLBACK_URL_MAX_LENGTH,
        ),
        Field("subtasks", "subtasks", "The pieces of work.", required=True, max_items=limits.max_subtasks),
    )
