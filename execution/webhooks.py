"""Webhooks: each event of a plan that has a callback_url, POSTed as JSON and signed (Standard Webhooks).

Every delivery carries `webhook-id` (`<plan_id>:<seq>`, the same on every attempt),
`webhook-timestamp` (seconds, the attempt's) and `webhook-signature: v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<body>">`, keyed with the plan owner's secret (POST
/api/v1/webhook-secret/), so receivers verify them with any Standard Webhooks library and
refuse a replay whose timestamp is old. After a rotation the previous secret signs too
(a second `v1,` signature) for WEBHOOK_SECRET_OVERLAP_S. An owner without a secret of their
own gets deliveries signed with the deployment's WEBHOOK_SECRET, with the former
`X-Plans-Signature: sha256=<hex HMAC of the body>` as well (deprecated, for one release).

Deliveries run as Celery tasks after the event commits, each attempt within
WEBHOOK_DEADLINE_S however slowly the receiver answers, reading at most
MAX_RESPONSE_BYTES of its answer, and are retried with jittered exponential backoff. A
target that is not a public address (execution/webhook_targets.py) gets nothing, checked
against the address each connection reaches; redirects are not followed, since they could
lead anywhere. Logs and errors name a callback URL by its origin only: its path and query
often hold the receiver's token.
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import requests
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from common.redaction import url_origin
from execution.models import Event, WebhookSecret
from execution.webhook_targets import GuardedAdapter, WebhookRefused

logger = logging.getLogger(__name__)

# The Standard Webhooks prefix, not a secret.
SECRET_PREFIX = "whsec_"  # nosec B105
SECRET_BYTES = 32
# Deprecated: the former signature, sent only with the deployment's WEBHOOK_SECRET.
SIGNATURE_HEADER = "X-Plans-Signature"
# A receiver's answer matters only by its status; this much of its body is read, the rest left unread.
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookFailed(Exception):
    """The receiver did not take the delivery; try again later."""


@dataclass(frozen=True)
class SecretStatus:
    """What an owner may know about their webhook secret without seeing it."""

    configured: bool
    created_at: datetime | None
    previous_valid_until: datetime | None


@dataclass(frozen=True)
class NewSecret:
    secret: str
    created_at: datetime
    previous_valid_until: datetime | None


def webhook_secret_rotate(*, owner: User) -> NewSecret:
    """Make the owner a new webhook secret and return it (the only time it is shown).

    The secret it replaces keeps signing deliveries, beside the new one, for WEBHOOK_SECRET_OVERLAP_S.
    """
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    now = timezone.now()
    with transaction.atomic():
        current = WebhookSecret.objects.select_for_update().filter(owner=owner).first()
        previous_until = now + timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_S) if current else None
        WebhookSecret.objects.update_or_create(
            owner=owner,
            defaults={
                "secret": secret,
                "previous": current.secret if current else "",
                "previous_until": previous_until,
                "created_at": now,
            },
        )
    return NewSecret(secret=secret, created_at=now, previous_valid_until=previous_until)


def webhook_secret_status(*, owner: User) -> SecretStatus:
    found = WebhookSecret.objects.filter(owner=owner).first()
    if found is None:
        return SecretStatus(configured=False, created_at=None, previous_valid_until=None)
    overlap = found.previous_until if found.previous_until and found.previous_until > timezone.now() else None
    return SecretStatus(configured=True, created_at=found.created_at, previous_valid_until=overlap)


def webhooks_enabled_for(owner: User) -> bool:
    """Return whether the owner's plans may have a callback_url: they, or the deployment, have a secret."""
    return bool(settings.WEBHOOK_SECRET) or WebhookSecret.objects.filter(owner=owner).exists()


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
    """Return the deprecated X-Plans-Signature value for a body (HMAC-SHA256 of the body alone)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(*, msg_id: str, timestamp: int, body: bytes, keys: list[bytes]) -> str:
    """Return the `webhook-signature` value: one `v1,<base64>` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys)


def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def _signing_keys(owner_id: int) -> tuple[list[bytes], str]:
    """Return the keys that sign an owner's deliveries, and the deprecated header's secret ("" for none)."""
    found = WebhookSecret.objects.filter(owner_id=owner_id).first()
    if found is not None:
        keys = [_secret_key(found.secret)]
        if found.previous and found.previous_until and found.previous_until > timezone.now():
            keys.append(_secret_key(found.previous))
        return keys, ""
    if settings.WEBHOOK_SECRET:
        return [settings.WEBHOOK_SECRET.encode()], settings.WEBHOOK_SECRET
    return [], ""


def webhook_deliver(*, plan_id: UUID, seq: int) -> None:
    """POST one event to its plan's callback_url; raise WebhookFailed unless it answers 2xx in time."""
    event = Event.objects.select_related("plan").get(plan_id=plan_id, seq=seq)
    url = event.plan.callback_url
    if not url:
        return
    keys, legacy_secret = _signing_keys(event.plan.owner_id)
    if not keys:
        logger.warning("Webhook %s of plan %s not sent: its owner has no webhook secret", seq, plan_id)
        return
    body = webhook_body(event)
    msg_id = f"{plan_id}:{seq}"
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(msg_id=msg_id, timestamp=timestamp, body=body, keys=keys),
        "X-Plans-Event": event.type,
        "X-Plans-Delivery": msg_id,
    }
    if legacy_secret:
        headers[SIGNATURE_HEADER] = webhook_signature(body, legacy_secret)
    target = url_origin(url)
    try:
        status = _post(url, body, headers)
    except WebhookRefused as refused:
        # Permanent until the configuration changes: retrying would only repeat the refusal.
        logger.warning("Webhook %s of plan %s not sent to %s: %s", seq, plan_id, target, refused)
        return
    except SoftTimeLimitExceeded:
        raise WebhookFailed(
            f"POST {target} did not finish within WEBHOOK_DEADLINE_S={settings.WEBHOOK_DEADLINE_S}s"
        ) from None
    except requests.RequestException as error:
        # `from None`: the exception's text names the whole URL.
        raise WebhookFailed(f"POST {target} failed: {type(error).__name__}") from None
    if not 200 <= status < 300:
        raise WebhookFailed(f"POST {target} answered {status}")


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST the body and return the status, having read at most MAX_RESPONSE_BYTES of the answer."""
    with requests.Session() as session:
        # Connect directly, so the address check applies to the receiver itself (not a
        # proxy), and send no .netrc credentials to whatever host a plan names.
        session.trust_env = False
        session.mount("http://", GuardedAdapter())
        session.mount("https://", GuardedAdapter())
        with session.post(
            url,
            data=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_S,
            allow_redirects=False,
            stream=True,
            # What trust_env would have read, and still should: a CA bundle of the operator's.
            verify=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True,
        ) as response:
            read = 0
            # Undecoded: a compressed answer cannot grow past the cap either.
            for chunk in response.raw.stream(8192, decode_content=False):
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break
            return response.status_code
