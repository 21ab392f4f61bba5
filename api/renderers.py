"""Renderers: Server-Sent Events, chosen with `Accept: text/event-stream`."""

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from rest_framework.renderers import BaseRenderer


class EventStreamRenderer(BaseRenderer):
    """Lets content negotiation pick SSE; the view streams, so this renders only errors."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return f"event: error\ndata: {json.dumps(data, cls=DjangoJSONEncoder)}\n\n".encode()
