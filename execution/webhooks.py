"""Webhooks: each event of a plan that has a callback_url, POSTed as JSON and signed.

The signature header is `X-Plans-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed
with settings.WEBHOOK_SECRET. Deliveries run as Celery tasks after the event commits and
are retried with backoff, so a slow or failing receiver never holds up the engine. A
target that is not a public address (execution/webhook_targets.py) gets nothing, checked
against the address each connection reaches; redirects are not followed, since they could
lead anywhere.
"""

import hashlib
import hmac
import json
import logging
import os
from uuid import UUID

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from execution.models import Event
from execution.webhook_targets import GuardedAdapter, WebhookRefused

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Plans-Signature"


class WebhookFailed(Exception):
    """The receiver did not take the delivery; try again later."""


def webhook_body(event: Event) -> bytes:
    document = {
        "plan_id": str(event.plan_id),
        "seq": event.seq,
        "type": event.type,
        "payload": event.payload,
        "created_at": event.created_at,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def webhook_signature(body: bytes, secret: str) -> str:
    """Return the signature header's value for a body: receivers compute the same and compare."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_deliver(*, plan_id: UUID, seq: int) -> None:
    """POST one event to its plan's callback_url; raise WebhookFailed unless it answers 2xx."""
    event = Event.objects.select_related("plan").get(plan_id=plan_id, seq=seq)
    url = event.plan.callback_url
    if not url or not settings.WEBHOOK_SECRET:
        return
    body = webhook_body(event)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: webhook_signature(body, settings.WEBHOOK_SECRET),
        "X-Plans-Event": event.type,
        "X-Plans-Delivery": f"{plan_id}:{seq}",
    }
    try:
        with requests.Session() as session:
            # Connect directly, so the address check applies to the receiver itself (not a
            # proxy), and send no .netrc credentials to whatever host a plan names.
            session.trust_env = False
            session.mount("http://", GuardedAdapter())
            session.mount("https://", GuardedAdapter())
            response = session.post(
                url,
                data=body,
                headers=headers,
                timeout=settings.WEBHOOK_TIMEOUT_S,
                allow_redirects=False,
                # What trust_env would have read, and still should: a CA bundle of the operator's.
                verify=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True,
            )
    except WebhookRefused as refused:
        # Permanent until the configuration changes: retrying would only repeat the refusal.
        logger.warning("Webhook %s of plan %s not sent to %s: %s", seq, plan_id, url, refused)
        return
    except requests.RequestException as error:
        raise WebhookFailed(f"POST {url} failed: {error}") from error
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"POST {url} answered {response.status_code}")
