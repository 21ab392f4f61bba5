"""Settings of the test cluster's workers: the service's own, plus agents only tests register."""

from config.settings import *  # noqa: F403
from config.settings import EXECUTION_AGENTS
from tests.support.agents import MISBEHAVING_AGENTS

EXECUTION_AGENTS = {**EXECUTION_AGENTS, **MISBEHAVING_AGENTS}
