"""Pagination of the API's lists (`page` and `page_size`, at most 500 a page) and of a plan's subtasks."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.utils.urls import remove_query_param, replace_query_param


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


SUBTASKS_PAGE_PARAMETERS = [
    OpenApiParameter(
        "subtasks_page",
        OpenApiTypes.INT,
        description="Which page of the plan's subtasks to show (1, the first, by default).",
    ),
    OpenApiParameter(
        "subtasks_page_size",
        OpenApiTypes.INT,
        description="Subtasks a page (API_SUBTASKS_PAGE_SIZE by default, at most API_SUBTASKS_MAX_PAGE_SIZE).",
    ),
]


@dataclass(frozen=True)
class SubtasksPage:
    """Which of a plan's subtasks a detail shows, and the URLs of the pages before and after."""

    offset: int
    limit: int
    count: int
    next: str | None
    previous: str | None

    def fields(self) -> dict[str, Any]:
        return {"subtasks_count": self.count, "subtasks_next": self.next, "subtasks_previous": self.previous}


def subtasks_page(request: Request, *, detail_url: str, count: int, first: bool = False) -> SubtasksPage:
    """Return the page of subtasks `?subtasks_page` and `?subtasks_page_size` ask for (400 if malformed, 404 past it).

    `first`: the first page of the default size whatever the query says (an action's answer,
    given after the action is done). The next and previous URLs point at the plan's detail
    (`detail_url`), whichever request answered with it.
    """
    query = _SubtasksPageQuery(data={} if first else request.query_params)
    query.is_valid(raise_exception=True)
    number, size = query.validated_data["subtasks_page"], query.validated_data["subtasks_page_size"]
    pages = max(1, -(-count // size))
    if number > pages:
        raise exceptions.NotFound(f"No page {number} of subtasks: the plan has {count}, {pages} page(s) of {size}.")
    url = request.build_absolute_uri(detail_url)
    if size != settings.API_SUBTASKS_PAGE_SIZE:
        url = replace_query_param(url, "subtasks_page_size", size)

    def page_url(page: int) -> str:
        return (
            remove_query_param(url, "subtasks_page") if page == 1 else replace_query_param(url, "subtasks_page", page)
        )

    return SubtasksPage(
        offset=(number - 1) * size,
        limit=size,
        count=count,
        next=page_url(number + 1) if number < pages else None,
        previous=page_url(number - 1) if number > 1 else None,
    )


class _SubtasksPageQuery(serializers.Serializer):
    subtasks_page = serializers.IntegerField(min_value=1, default=1)
    subtasks_page_size = serializers.IntegerField(min_value=1, required=False)

    def validate_subtasks_page_size(self, value: int) -> int:
        most = settings.API_SUBTASKS_MAX_PAGE_SIZE
        if value > most:
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {most}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("subtasks_page_size", settings.API_SUBTASKS_PAGE_SIZE)
        return attrs
