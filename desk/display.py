"""HTML snippets shared by the admin pages: status badges, progress bars and readable JSON."""

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from common.palette import status_colour, text_colour

# Segments of a progress bar, in the order they are drawn.
PROGRESS_SEGMENTS = ("done", "failed", "running", "waiting_approval", "skipped", "cancelled")


def badge(status: str, label: str | None = None) -> SafeString:
    """Return a coloured badge for a status."""
    fill = status_colour(status)
    return format_html(
        '<span class="status-badge" data-status="{}" style="background:{};color:{}">{}</span>',
        status,
        fill,
        text_colour(fill),
        label if label is not None else status.replace("_", " "),
    )


def progress_bar(counts: Mapping[str, Any]) -> SafeString:
    """Return a bar split by subtask status, with the percentage done, from plan_progress-style counts."""
    total = counts.get("total") or 0
    if not total:
        return format_html('<span class="progress-empty">{}</span>', "no subtasks")
    segments = format_html_join(
        "",
        '<span style="width:{}%;background:{}" title="{}: {}"></span>',
        (
            (f"{100 * counts.get(status, 0) / total:.2f}", status_colour(status), status.replace("_", " "), count)
            for status in PROGRESS_SEGMENTS
            if (count := counts.get(status, 0))
        ),
    )
    done = counts.get("done", 0)
    return format_html(
        '<span class="progress" title="{} of {} done"><span class="progress-bar">{}</span>'
        '<span class="progress-label">{}%</span></span>',
        done,
        total,
        segments,
        f"{100 * done / total:.0f}",
    )


def json_text(value: Any) -> str:
    """Return a JSON value as the admin shows it: indented, keys sorted."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder)


def pretty_json(value: Any, *, limit: int | None = None) -> SafeString:
    """Return a JSON value indented in a <pre>, cut after `limit` characters."""
    text = json_text(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return format_html('<pre class="json">{}</pre>', text)


def pretty_text(text: str, *, limit: int | None = None) -> SafeString:
    """Return text in a <pre> that keeps its line breaks, cut after `limit` characters."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return format_html('<pre class="text">{}</pre>', text)


def history_table(headings: Sequence[str], rows: Iterable[Sequence[Any]], *, css: str = "history") -> SafeString:
    """Return a table of records (transitions, events, tool calls, messages): one row per record, escaped."""
    head = format_html_join("", "<th>{}</th>", ((heading,) for heading in headings))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html('<table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', css, head, body)


def moment(value: datetime) -> str:
    """Return a timestamp to the millisecond, as the history tables show it."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def plan_link(plan_id: Any, goal: str) -> SafeString:
    """Return a link to a plan's page, labelled with the start of its goal."""
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:plans_plan_change", args=[plan_id]), Truncator(goal).chars(60)
    )


def subtask_link(subtask_id: Any, key: str) -> SafeString:
    """Return a link to a subtask's page, labelled with its key."""
    return format_html('<a href="{}">{}</a>', reverse("admin:plans_subtask_change", args=[subtask_id]), key)
