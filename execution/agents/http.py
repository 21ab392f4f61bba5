"""The http agent: POSTs the context as JSON to a configured URL and reads the next step back.

The endpoint answers {"result": ...}, {"tool_call": {"tool", "arguments",
"requires_approval"}} or {"error": "..."} (a failure, not retried). Connection errors,
timeouts, 5xx and 429 answers are retried; any other answer fails the subtask.
See docs/agents.md, "The HTTP agent protocol".
"""

import requests
from django.conf import settings

from execution.agents.base import AgentError, BaseAgent, Context, Fail, Step, retry_after_seconds, step_from_json


class HttpAgent(BaseAgent):
    description = "POSTs the context as JSON to a configured URL and reads the next step back."

    def run(self, context: Context) -> Step:
        url = self.options.get("url") or ""
        if not url:
            return Fail(f"The {self.name!r} agent has no URL configured (EXECUTION_HTTP_AGENT_URL).")
        timeout = self.options.get("timeout_s") or settings.EXECUTION_HTTP_AGENT_TIMEOUT_S
        try:
            response = requests.post(url, json=context, timeout=timeout, headers={"Accept": "application/json"})
        except requests.Timeout as error:
            raise AgentError(f"POST {url} timed out after {timeout}s.") from error
        except requests.RequestException as error:
            raise AgentError(f"POST {url} failed: {error}") from error
        if response.status_code >= 500 or response.status_code == 429:
            raise AgentError(
                f"POST {url} answered {response.status_code}: {response.text[:500]}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code >= 300:
            return Fail(f"POST {url} answered {response.status_code}: {response.text[:500]}")
        try:
            return step_from_json(response.json())
        except (ValueError, AgentError) as error:
            return Fail(f"POST {url} answered something that is not a step ({error}): {response.text[:500]}")
