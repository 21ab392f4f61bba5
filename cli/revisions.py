"""The terminal side of a plan's revisions: the diff between two of them, added in green, removed in red, side by side.

Keys, descriptions, inputs and reasons come from clients: they are shown as plain Text with
odd characters written out (common/text.py), never parsed as Rich markup.
"""

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cli.console import shown
from common.text import printable

SHOWN_PER_KIND = 200


def diff_report(diff: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], *, title: str) -> Group:
    """Return what `plans diff` prints: the plan's fields and changed subtasks side by side, the others as lines."""
    before = {item["key"]: item for item in old["subtasks"]}
    after = {item["key"]: item for item in new["subtasks"]}
    parts: list[RenderableType] = [Text(title, style="bold")]
    rows = [("the plan", name, old.get(name), new.get(name)) for name in diff["plan_fields"]]
    rows += [
        (f"subtask {key}", name, before[key].get(name), after[key].get(name))
        for key in diff["changed"][:SHOWN_PER_KIND]
        for name in diff["subtask_fields"].get(key, [])
    ]
    for key in diff["added"][:SHOWN_PER_KIND]:
        parts.append(_line("+", after[key], "green"))
    for key in diff["removed"][:SHOWN_PER_KIND]:
        parts.append(_line("-", before[key], "red"))
    if rows:
        table = Table(title="Changed", title_justify="left")
        for column in ("of", "field", "before", "after"):
            table.add_column(column, overflow="fold")
        for subject, name, was, now in rows:
            table.add_row(shown(subject), name, Text(_value(was), style="red"), Text(_value(now), style="green"))
        parts.append(table)
    hidden = sum(max(0, len(diff[kind]) - SHOWN_PER_KIND) for kind in ("added", "removed", "changed"))
    if hidden:
        parts.append(Text(f"… and {hidden} more subtasks", style="dim"))
    if len(parts) == 1:
        parts.append(Text("No subtask and none of the plan's fields changed."))
    return Group(*parts)


def _line(sign: str, item: Mapping[str, Any], style: str) -> Text:
    after = f" (after {', '.join(item['depends_on'])})" if item.get("depends_on") else ""
    words = f"{sign} {item['key']} · {item['agent']} · {item['description']}{after}"
    return Text(printable(words, multiline=False), style=style)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return printable(json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1))
    if isinstance(value, list):
        return printable(", ".join(str(item) for item in value) or "—", multiline=False)
    return printable("—" if value is None else str(value))
