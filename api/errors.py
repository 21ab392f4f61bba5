"""The API's error format: one exception handler for domain errors and DRF's own, and their schema."""

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import DomainError

logger = logging.getLogger(__name__)

# DRF's own error codes, renamed to the ones the API documents.
DRF_CODES = {
    "not_authenticated": "not_authenticated",
    "authentication_failed": "not_authenticated",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "parse_error": "validation_error",
    "invalid": "validation_error",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer every failure with {"error": {"code", "message", "details"}} and its status."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        # Raised when DRF reads the body (request.data), past DATA_UPLOAD_MAX_MEMORY_SIZE.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The request body is over the limit of {limit} bytes (DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE)."
        return Response(
            error_body("request_too_large", message, {"limit": limit}), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"), exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error."), status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    details: dict[str, Any]
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("validation_error", _first_message(details), details)
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        details = {"wait": getattr(exc, "wait", None)} if isinstance(exc, exceptions.Throttled) else {}
        response.data = error_body(DRF_CODES.get(str(code), str(code)), str(exc.detail), details)
    return response


def _first_message(details: Any, path: str = "") -> str:
    if isinstance(details, dict):
        for key, value in details.items():
            return _first_message(value, f"{path}.{key}" if path else str(key))
    if isinstance(details, list) and details:
        return _first_message(details[0], path)
    prefix = "" if path in ("", "non_field_errors") else f"{path}: "
    return f"{prefix}{details}"


def authenticated_user(request: Request) -> User:
    """Return the request's user; IsAuthenticated (the default permission) let only users in."""
    user = request.user
    assert isinstance(user, User)
    return user


def not_found(request, exception=None) -> JsonResponse:
    """Answer unknown URLs with the API's error format."""
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request) -> JsonResponse:
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


ErrorSerializer = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.DictField(),
            },
        )
    },
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Return OpenAPI responses in the error format for these statuses."""
    descriptions = {
        400: "Invalid input (validation_error, or a plan rule's code).",
        401: "Not authenticated (not_authenticated).",
        403: "Not allowed (permission_denied).",
        404: "Not found, not yours, or no such page (not_found).",
        409: "Conflicts with the current state (invalid_state, already_decided or already_voted).",
        412: "If-Match names another revision than the plan's current one (stale_revision).",
        413: "The request body is over DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE (request_too_large).",
        415: "The body is not JSON (unsupported_media_type).",
        429: "Too many requests (throttled).",
        503: "A dependency is down.",
    }
    return {code: OpenApiResponse(ErrorSerializer, description=descriptions[code]) for code in codes}
