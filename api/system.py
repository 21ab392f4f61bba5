"""Endpoints about the service itself: its agents, its health, API tokens, and the caller's webhook secret."""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from api.errors import authenticated_user, errors
from api.parsers import JSONParser
from api.probes import health_answer, live_answer, ready_answer
from execution.selectors import agents_with_tools
from execution.webhooks import webhook_secret_rotate, webhook_secret_status


class McpToolSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The function the model is offered: `{server}__{tool}`.")
    tool = serializers.CharField(help_text="The tool's name on the server.")
    description = serializers.CharField()
    requires_approval = serializers.BooleanField(help_text="Whether a call waits for a person's decision.")
    parameters = serializers.JSONField(help_text="The tool's inputSchema, which arguments are checked against.")


class McpServerSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The prefix of the server's tools.")
    transport = serializers.ChoiceField(choices=["stdio", "http"])
    url = serializers.CharField(required=False, help_text="A Streamable HTTP server's endpoint, without credentials.")
    headers = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The names of the headers sent (never their values)."
    )
    command = serializers.CharField(required=False, help_text="The command a worker runs for a stdio server.")
    args = serializers.ListField(child=serializers.CharField(), required=False)
    env = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The names of the variables set for the command."
    )
    tools_filter = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="The tools kept (null: all the server lists)."
    )
    requires_approval = serializers.BooleanField()
    approval = serializers.DictField(child=serializers.BooleanField(), help_text="Per-tool overrides.")
    timeout_s = serializers.FloatField()
    listed_at = serializers.DateTimeField(allow_null=True, help_text="When a worker last listed its tools.")
    tools = McpToolSerializer(many=True, allow_null=True, help_text="The tools last listed (null until listed).")


class AgentLimitsSerializer(serializers.Serializer):
    max_concurrency = serializers.IntegerField(allow_null=True, help_text="Runs at once, across all workers.")
    running = serializers.IntegerField(allow_null=True, help_text="Runs holding a slot now (null without a limit).")
    requests_per_minute = serializers.IntegerField(allow_null=True, help_text="Model calls a minute (openai).")
    requests_last_minute = serializers.IntegerField(
        allow_null=True, help_text="Model calls in the last 60 seconds (null without a limit)."
    )
    held_for_s = serializers.FloatField(
        allow_null=True, help_text="How long a model's Retry-After still holds back every run (0: not held)."
    )


class AgentSerializer(serializers.Serializer):
    name = serializers.CharField()
    implementation = serializers.CharField()
    description = serializers.CharField()
    mcp_servers = McpServerSerializer(many=True, help_text="The MCP servers an openai agent takes tools from.")
    output_schema = serializers.JSONField(
        allow_null=True, help_text="The JSON Schema an openai agent's final answer must match (null: free text)."
    )
    limits = AgentLimitsSerializer(help_text="Provider limits and their current use.")


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField(required=False, help_text="Staff only.")
    error = serializers.CharField(required=False, help_text="Staff only.")


class WorkersSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    count = serializers.IntegerField()
    age_s = serializers.FloatField(help_text="How old the workers' last answer to a ping is.")
    names = serializers.ListField(child=serializers.CharField(), required=False, help_text="Staff only.")
    error = serializers.CharField(required=False, help_text="Staff only.")


class ReadySerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    database = CheckSerializer()
    broker = CheckSerializer()


class HealthSerializer(ReadySerializer):
    version = serializers.CharField()
    workers = WorkersSerializer()


class LiveSerializer(serializers.Serializer):
    ok = serializers.BooleanField()


class AgentsView(APIView):
    @extend_schema(summary="Registered agents", responses={200: AgentSerializer(many=True), **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(agents_with_tools())


class Probe(APIView):
    """Open to monitoring: no authentication, no throttling (a probe answered 429 reads as down).

    Under ASGI, anonymous probes are answered before Django (api/probes.py); these views
    answer the rest (staff, WSGI servers, tests) with the same bodies.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []


class LiveView(Probe):
    @extend_schema(summary="The process serves (checks nothing else)", responses={200: LiveSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        return _response(*live_answer())


class ReadyView(Probe):
    @extend_schema(
        summary="The database and the broker answer (no worker round trip)",
        responses={200: ReadySerializer, 503: ReadySerializer},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        return _response(*ready_answer())


class HealthView(Probe):
    """Anyone may ask; staff also see hostnames, latencies and error texts."""

    authentication_classes = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES)

    @extend_schema(
        summary="Database, broker and worker status",
        responses={200: HealthSerializer, 503: HealthSerializer},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        return _response(*health_answer(details=request.user.is_staff))


def _response(status_code: int, body: dict[str, Any]) -> Response:
    return Response(body, status=status_code, headers={"Cache-Control": "no-store"})


@extend_schema(exclude=True)
class RootLiveView(LiveView):
    """/health/live/ at the root too, where orchestrators look; documented under /api/v1/health/live/."""


@extend_schema(exclude=True)
class RootReadyView(ReadyView):
    """/health/ready/ at the root too; documented under /api/v1/health/ready/."""


@extend_schema(exclude=True)
class RootHealthView(HealthView):
    """/health/ at the root too, where load balancers look; documented under /api/v1/health/."""


class TokenView(ObtainAuthToken):
    """Exchange a username and password for an API token."""

    # ObtainAuthToken has no throttles of its own (throttle_classes = ()): the scope alone would not apply.
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"
    # ObtainAuthToken takes forms too; the API takes JSON bodies only.
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Get an API token",
        request=inline_serializer(
            "TokenRequest", fields={"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses={200: inline_serializer("Token", fields={"token": serializers.CharField()}), **errors(400, 429)},
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


class WebhookSecretStatusSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    created_at = serializers.DateTimeField(allow_null=True)
    previous_valid_until = serializers.DateTimeField(
        allow_null=True, help_text="Until then the secret before the last rotation signs deliveries too."
    )


class NewWebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="Shown this once: keep it where your receiver verifies deliveries.")
    created_at = serializers.DateTimeField()
    previous_valid_until = serializers.DateTimeField(allow_null=True)


class WebhookSecretView(APIView):
    """The key that signs the webhooks of the caller's plans (Standard Webhooks)."""

    @extend_schema(
        summary="Whether you have a webhook secret (never the secret itself)",
        responses={200: WebhookSecretStatusSerializer, **errors(401)},
    )
    def get(self, request: Request) -> Response:
        found = webhook_secret_status(owner=authenticated_user(request))
        return Response(WebhookSecretStatusSerializer(found).data)

    @extend_schema(
        summary="Make a new webhook secret, shown once; the previous one signs too for WEBHOOK_SECRET_OVERLAP_S",
        request=None,
        responses={201: NewWebhookSecretSerializer, **errors(401, 429)},
    )
    def post(self, request: Request) -> Response:
        made = webhook_secret_rotate(owner=authenticated_user(request))
        response = Response(NewWebhookSecretSerializer(made).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
