"""An agent's provider limits as its definition gives them: how many runs at once, how many model calls a minute."""

from dataclasses import dataclass
from typing import Any

from execution.agents.fields import check_number

# The options of every kind, and those of the kinds that call a model.
ANY_KIND = ("max_concurrency",)
MODEL_KINDS = {"openai": ("requests_per_minute",)}


@dataclass(frozen=True)
class AgentLimits:
    """What holds the runs of one agent back, across all workers (None: no limit).

    `shares_retry_after`: a Retry-After from the agent's endpoint holds back every run
    of the agent, not only the one that got it (the model agents).
    """

    max_concurrency: int | None = None
    requests_per_minute: int | None = None
    shares_retry_after: bool = False

    @property
    def active(self) -> bool:
        """Tell whether a run of this agent must be checked before it starts."""
        return bool(self.max_concurrency or self.requests_per_minute or self.shares_retry_after)

    def describe(self) -> dict[str, Any]:
        return {"max_concurrency": self.max_concurrency, "requests_per_minute": self.requests_per_minute}


NO_LIMITS = AgentLimits()


def limits_from_options(kind: str, options: dict[str, Any]) -> AgentLimits:
    """Take the limit options out of a definition's options and check them (DefinitionError names the field)."""
    own = MODEL_KINDS.get(kind, ())
    checked = {key: check_number(options, key, minimum=1, integer=True) for key in (*ANY_KIND, *own) if key in options}
    for key in checked:
        options.pop(key)
    return AgentLimits(**checked, shares_retry_after=kind in MODEL_KINDS)


def agent_limits(agent: Any) -> AgentLimits:
    """Return an agent's limits (none for agents built from settings without a definition)."""
    limits = getattr(agent, "limits", None)
    return limits if isinstance(limits, AgentLimits) else NO_LIMITS
