"""An agent's side of the review loop, on `requests` only: submit a plan, revise it when a person asks, see it run.

It submits the first plan file, then follows the plan's live event stream. When a reviewer
rejects the plan's approval asking for changes (`plan.changes_requested`), it answers with
the next file as a revision (PATCH, with If-Match so that it never overwrites a change it
has not seen); a real agent would have its model rewrite the plan from the reason instead.
With no file left it cancels the plan. Once approved, it waits for the plan to end.

    export PLANS_TOKEN=...            # POST /api/v1/auth/token/ (docs/api.md)
    python examples/revise_loop.py http://127.0.0.1:8000 examples/release_notes.json \\
        examples/release_notes_revised.json

It exits 0 when the plan completed, 1 when it failed or was cancelled.
"""

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import requests

TIMEOUT = (10, 60)  # connect, and read: the stream sends a comment every 15 s while idle


class Plans:
    """The few calls of the REST API this loop makes."""

    def __init__(self, base_url: str, token: str) -> None:
        self.api = base_url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def submit(self, plan: dict[str, Any]) -> dict[str, Any]:
        return self._answer(self.session.post(f"{self.api}/plans/", json=plan, timeout=TIMEOUT))

    def revise(self, plan_id: str, changes: dict[str, Any], *, revision: int) -> dict[str, Any]:
        # If-Match: refused (412 stale_revision) should someone else have revised it since revision `revision`.
        headers = {"If-Match": f'"{revision}"'}
        url = f"{self.api}/plans/{plan_id}/"
        return self._answer(self.session.patch(url, json=changes, headers=headers, timeout=TIMEOUT))

    def cancel(self, plan_id: str, reason: str) -> dict[str, Any]:
        url = f"{self.api}/plans/{plan_id}/cancel/"
        return self._answer(self.session.post(url, json={"reason": reason}, timeout=TIMEOUT))

    def read(self, plan_id: str) -> dict[str, Any]:
        return self._answer(self.session.get(f"{self.api}/plans/{plan_id}/", timeout=TIMEOUT))

    def events(self, plan_id: str) -> Iterator[dict[str, Any]]:
        """Yield the plan's events from the first, as they come; reconnect where the stream left off."""
        last = 0
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            url = f"{self.api}/plans/{plan_id}/events/"
            with self.session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
                response.raise_for_status()
                data = ""
                for raw in response.iter_lines():
                    line = raw.decode("utf-8")
                    if line.startswith("data:"):
                        data += line.removeprefix("data:").strip()
                    elif not line and data:  # a blank line ends a message
                        event = json.loads(data)
                        data, last = "", event["seq"]
                        yield event

    def _answer(self, response: requests.Response) -> dict[str, Any]:
        body = response.json()
        if response.status_code >= 400:
            error = body["error"]
            raise SystemExit(f"{response.status_code} {error['code']}: {error['message']} {error['details'] or ''}")
        return body


def rewrite(plan: dict[str, Any], reason: str, files: list[str]) -> dict[str, Any] | None:
    """Return the plan revised as the reviewer asked, or None when there is nothing more to offer.

    Here: the next file. An agent backed by a model would send it the plan and the reason.
    """
    if not files:
        return None
    with open(files.pop(0), encoding="utf-8") as revised:
        return json.load(revised)


def main(base_url: str, first: str, revisions: list[str]) -> int:
    plans = Plans(base_url, os.environ["PLANS_TOKEN"])
    with open(first, encoding="utf-8") as submitted:
        plan = plans.submit(json.load(submitted))
    print(f"submitted plan {plan['id']} (revision {plan['revision']}): {plan['status']}", flush=True)
    for event in plans.events(plan["id"]):
        kind, payload = event["type"], event["payload"]
        if kind == "plan.changes_requested":
            print(f"changes requested on revision {payload['revision']}: {payload['reason']}", flush=True)
            changes = rewrite(plan, payload["reason"], revisions)
            if changes is None:
                plans.cancel(plan["id"], "no further revision to offer")
                print("nothing more to offer: cancelled", flush=True)
                return 1
            plan = plans.revise(plan["id"], changes, revision=payload["revision"])
            print(f"revised: revision {plan['revision']}, waiting for approval again", flush=True)
        elif kind == "plan.approved":
            print(f"approved by {payload['actor']}", flush=True)
        elif kind in ("agent.execution.completed", "plan.cancelled"):
            break
    plan = plans.read(plan["id"])
    print(f"plan {plan['id']} {plan['status']} at revision {plan['revision']}", flush=True)
    for item in plan["subtasks"]:
        print(f"  {item['key']}: {item['status']} {json.dumps(item['result'])}", flush=True)
    return 0 if plan["status"] == "completed" else 1


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
