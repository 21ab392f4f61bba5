"""The agent registry: names from settings.EXECUTION_AGENTS and EXECUTION_AGENTS_FILE mapped to agents."""

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from execution.agents.base import Agent
from execution.agents.definitions import agents_file_read
from execution.agents.limits import NO_LIMITS, AgentLimits, agent_limits
from execution.agents.mcp_servers import McpServer


class UnknownAgent(LookupError):
    pass


@cache
def _agents() -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    for name, config in settings.EXECUTION_AGENTS.items():
        options = dict(config)
        agent_class = import_string(options.pop("class"))
        agents[name] = agent_class(name, **options)
    # The file's agents are added to the built-in ones and replace those of the same name.
    if settings.EXECUTION_AGENTS_FILE:
        agents.update(agents_file_read(settings.EXECUTION_AGENTS_FILE))
    return agents


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("EXECUTION_AGENTS", "EXECUTION_AGENTS_FILE"):
        _agents.cache_clear()


def agents_load() -> None:
    """Build every agent now, reading EXECUTION_AGENTS_FILE; raise AgentsFileError when it is wrong."""
    _agents()


def agent_get(name: str) -> Agent:
    """Return the agent registered under `name`."""
    try:
        return _agents()[name]
    except KeyError:
        raise UnknownAgent(name) from None


def agent_names() -> list[str]:
    """Return the registered agent names, sorted."""
    return sorted(_agents())


def agents_describe() -> list[dict[str, Any]]:
    """Return each registered agent's name, implementation, description, MCP servers (as defined) and output schema."""
    return [
        {
            "name": name,
            "implementation": f"{type(agent).__module__}.{type(agent).__qualname__}",
            "description": getattr(agent, "description", ""),
            "mcp_servers": [server.describe() for server in agent_mcp_servers(agent)],
            "output_schema": getattr(agent, "output_schema", None),
        }
        for name, agent in sorted(_agents().items())
    ]


def limits_of(name: str) -> AgentLimits:
    """Return the limits of the named agent (none when it has none, or is not registered)."""
    agent = _agents().get(name)
    return NO_LIMITS if agent is None else agent_limits(agent)


def agents_limited() -> dict[str, AgentLimits]:
    """Return the agents whose runs are checked against limits before they start, with their limits."""
    return {name: limits for name, agent in _agents().items() if (limits := agent_limits(agent)).active}


def agent_mcp_servers(agent: Agent) -> list[McpServer]:
    """Return the MCP servers an agent takes tools from (none for most kinds)."""
    return list(getattr(agent, "mcp_servers", None) or [])


def agent_input_errors(name: str, task_input: dict[str, Any]) -> list[str]:
    """Return what the named agent finds wrong with a subtask input (nothing if unknown)."""
    try:
        return agent_get(name).validate_input(task_input)
    except UnknownAgent:
        return []
