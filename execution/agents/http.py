"""The http agent: POSTs the context as JSON to a configured URL and reads the next step back.

The endpoint answers {"result": ...}, {"tool_call": {"tool", "arguments",
"requires_approval"}} or {"error": "..."} (a failure, not retried). Connection errors,
timeouts, 5xx and 429 answers are retried; any other answer fails the subtask.
See docs/agents.md, "The HTTP agent protocol". Errors name the URL without its user, password
and query, and say nothing the answer holds in a URL's credentials either.
"""

import requests
from django.conf import settings

from common.redaction import credentials_stripped, url_without_credentials
from execution.agents.base import AgentError, BaseAgent, Context, Fail, Step, retry_after_seconds, step_from_json

BODY_EXCERPT = 500


class HttpAgent(BaseAgent):
    description = "POSTs the context as JSON to a configured URL and reads the next step back."

    def run(self, context: Context) -> Step:
        url = self.options.get("url") or ""
        if not url:
            return Fail(f"The {self.name!r} agent has no URL configured (EXECUTION_HTTP_AGENT_URL).")
        timeout = self.options.get("timeout_s") or settings.EXECUTION_HTTP_AGENT_TIMEOUT_S
        shown = url_without_credentials(url)
        try:
            response = requests.post(url, json=context, timeout=timeout, headers={"Accept": "application/json"})
        except requests.Timeout:
            # `from None`: the exception's text names the URL with its query.
            raise AgentError(f"POST {shown} timed out after {timeout}s.") from None
        except requests.RequestException as error:
            raise AgentError(credentials_stripped(f"POST {shown} failed: {error}")) from None
        excerpt = credentials_stripped(response.text[:BODY_EXCERPT])
        if response.status_code >= 500 or response.status_code == 429:
            raise AgentError(
                f"POST {shown} answered {response.status_code}: {excerpt}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code >= 300:
            return Fail(f"POST {shown} answered {response.status_code}: {excerpt}")
        try:
            return step_from_json(response.json())
        except (ValueError, AgentError) as error:
            return Fail(f"POST {shown} answered something that is not a step ({error}): {excerpt}")
