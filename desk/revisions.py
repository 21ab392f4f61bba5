"""How the admin shows a plan's revisions: each diff, added subtasks in green, removed in red, changes side by side.

Everything shown comes from clients (keys, descriptions, inputs, reasons) and goes through
format_html, escaped.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from desk.display import moment, pretty_json
from plans.models import PlanRevision
from plans.revisions import content_diff

# A diff lists at most this many subtasks of each kind (added, removed, changed); the rest are counted.
SHOWN_PER_KIND = 100
# A plan's page shows its latest revisions, this many.
REVISIONS_SHOWN = 10


def revision_diff(diff: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> SafeString:
    """Return the diff between two contents: the plan's fields and changed subtasks side by side, the others listed."""
    before = {item["key"]: item for item in old["subtasks"]}
    after = {item["key"]: item for item in new["subtasks"]}
    parts: list[SafeString | str] = []
    if diff["plan_fields"]:
        parts.append(_side_by_side("the plan", ((name, old.get(name), new.get(name)) for name in diff["plan_fields"])))
    parts.append(_listed("added", [after[key] for key in diff["added"]], "+"))
    parts.append(_listed("removed", [before[key] for key in diff["removed"]], "\N{MINUS SIGN}"))
    changed = diff["changed"]
    for key in changed[:SHOWN_PER_KIND]:
        names = diff["subtask_fields"].get(key, [])
        parts.append(
            _side_by_side(f"subtask {key}", ((name, before[key].get(name), after[key].get(name)) for name in names))
        )
    if len(changed) > SHOWN_PER_KIND:
        parts.append(
            format_html('<p class="diff-more">… and {} more changed subtasks</p>', len(changed) - SHOWN_PER_KIND)
        )
    if not any(diff[kind] for kind in ("plan_fields", "added", "removed", "changed")):
        parts.append(format_html('<p class="diff-none">{}</p>', "No subtask and none of the plan's fields changed."))
    return format_html('<div class="revision-diff">{}</div>', format_html_join("", "{}", ((part,) for part in parts)))


def diff_from_previous(revisions: Sequence[PlanRevision], number: int) -> SafeString | str:
    """Return the diff of revision `number` from the one before, from the revisions given (both among them)."""
    by_number = {revision.revision: revision for revision in revisions}
    revision, previous = by_number.get(number), by_number.get(number - 1)
    if revision is None or previous is None:
        return "As submitted."
    diff = revision.diff or content_diff(previous.content, revision.content)
    return revision_diff(diff, previous.content, revision.content)


def revisions_history(revisions: Sequence[PlanRevision], *, total: int, shown: int) -> SafeString:
    """Return the latest `shown` of the revisions given (oldest first), newest first: who, when, diff, requests.

    The revision before the oldest shown may be given too, for its diff.
    """
    blocks = []
    for revision in list(reversed(revisions))[:shown]:
        author = revision.author.get_username() if revision.author is not None else "—"
        subtasks = len(revision.content.get("subtasks", []))
        blocks.append(
            format_html(
                '<section class="revision" data-revision="{}"><h3>Revision {} <span class="revision-meta">'
                "{} by {}, {} subtasks</span></h3>{}{}</section>",
                revision.revision,
                revision.revision,
                moment(revision.created_at),
                author,
                subtasks,
                diff_from_previous(revisions, revision.revision),
                change_requests(revision),
            )
        )
    more = format_html('<p class="diff-more">The latest {} of {} revisions.</p>', len(blocks), total)
    return format_html("{}{}", more if total > len(blocks) else "", format_html_join("", "{}", ((b,) for b in blocks)))


def change_requests(revision: PlanRevision) -> SafeString:
    """Return the changes people asked for when they sent this revision back."""
    return format_html_join(
        "",
        '<p class="change-request"><strong>Changes requested</strong> by {} at {}: {}</p>',
        (
            (request.get("requested_by", ""), _when(request.get("requested_at")), request.get("reason", ""))
            for request in revision.change_requests
        ),
    )


def _listed(kind: str, items: list[Mapping[str, Any]], sign: str) -> SafeString | str:
    if not items:
        return ""
    rows = format_html_join(
        "",
        '<li class="diff-{}" data-key="{}"><span class="diff-sign">{}</span> <code>{}</code> · {} · {}{}</li>',
        (
            (
                kind,
                item["key"],
                sign,
                item["key"],
                item["agent"],
                item["description"],
                format_html(" (after {})", ", ".join(item["depends_on"])) if item.get("depends_on") else "",
            )
            for item in items[:SHOWN_PER_KIND]
        ),
    )
    more = len(items) - SHOWN_PER_KIND
    tail = format_html('<li class="diff-more">… and {} more</li>', more) if more > 0 else ""
    noun = "subtask" if len(items) == 1 else "subtasks"
    return format_html('<h4>{} {} {}</h4><ul class="diff-list">{}{}</ul>', len(items), noun, kind, rows, tail)


def _side_by_side(subject: str, rows: Iterable[tuple[str, Any, Any]]) -> SafeString:
    body = format_html_join(
        "",
        '<tr data-field="{}"><th>{}</th><td class="diff-before">{}</td><td class="diff-after">{}</td></tr>',
        ((name, name, _value(before), _value(after)) for name, before, after in rows),
    )
    return format_html(
        '<table class="diff-changed" data-subject="{}"><caption>{} changed</caption>'
        "<thead><tr><th>field</th><th>before</th><th>after</th></tr></thead><tbody>{}</tbody></table>",
        subject,
        subject,
        body,
    )


def _when(stamp: Any) -> str:
    parsed = parse_datetime(stamp) if isinstance(stamp, str) else None
    return moment(parsed) if parsed is not None else "—"


def _value(value: Any) -> SafeString | str:
    if isinstance(value, dict):
        return pretty_json(value, limit=2000)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "—"
    if value is None:
        return "—"
    return str(value)
