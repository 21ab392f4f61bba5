"""Endpoints for the registered agents, the service's health, and API tokens."""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import errors
from api.parsers import JSONParser
from execution.health import health_check
from execution.selectors import agents_with_tools


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


class AgentSerializer(serializers.Serializer):
    name = serializers.CharField()
    implementation = serializers.CharField()
    description = serializers.CharField()
    mcp_servers = McpServerSerializer(many=True, help_text="The MCP servers an openai agent takes tools from.")


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField(required=False)
    error = serializers.CharField(required=False)


class WorkersSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    count = serializers.IntegerField()
    names = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    database = CheckSerializer()
    broker = CheckSerializer()
    workers = WorkersSerializer()


class AgentsView(APIView):
    @extend_schema(summary="Registered agents", responses={200: AgentSerializer(many=True), **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(agents_with_tools())


class HealthView(APIView):
    """Open to monitoring: no authentication."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Database, broker and worker status",
        responses={200: HealthSerializer, 503: HealthSerializer},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        report = health_check()
        return Response(report, status=status.HTTP_200_OK if report["ok"] else status.HTTP_503_SERVICE_UNAVAILABLE)


@extend_schema(exclude=True)
class RootHealthView(HealthView):
    """/health/ at the root too, where load balancers look; documented under /api/v1/health/."""


class TokenView(ObtainAuthToken):
    """Exchange a username and password for an API token."""

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
