"""The picture of a plan's dependency graph: a layered SVG drawn in pure Python (no ORM, no Graphviz)."""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from common.palette import STATUS_COLOURS, status_colour, text_colour
from plans.models import SubtaskStatus

__all__ = ["STATUS_COLOURS", "Node", "dag_svg", "status_colour", "summary_svg", "text_colour", "too_large"]

SUBTASK_STATUSES = tuple(SubtaskStatus.values)

# Beyond these the picture is no longer readable (nor cheap to load); draw a summary instead.
MAX_NODES = 300
MAX_EDGES = 3000

NODE_WIDTH, NODE_HEIGHT = 168, 40
COLUMN_GAP, ROW_GAP = 56, 14
MARGIN, LEGEND_HEIGHT = 12, 28
KEY_CHARS, LABEL_CHARS = 20, 26
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
# How a node a revision added or changed is outlined: (colour, width, dashes).
CHANGE_OUTLINES = {"added": ("#15803d", 3, ""), "changed": ("#b45309", 3, "5 3")}


@dataclass(frozen=True)
class Node:
    """A subtask as drawn: `column` its batch, `position` its submission order, `change` what a revision did to it."""

    key: str
    status: str
    column: int
    position: int = 0
    label: str = ""
    href: str = ""
    change: str = ""  # "added" or "changed" (outlined in CHANGE_OUTLINES), or ""


def too_large(*, nodes: int, edges: int) -> bool:
    """Return whether a graph this size gets a summary instead of a node-by-node picture."""
    return nodes > MAX_NODES or edges > MAX_EDGES


def dag_svg(nodes: Sequence[Node], edges: Iterable[tuple[str, str]]) -> str:
    """Return an SVG of the graph: one column per batch, an arrow from each dependency to its dependent.

    `edges` are (dependency key, dependent key) pairs; pairs naming unknown keys are ignored.
    Within a column, nodes are ordered by the mean row of their dependencies (one barycenter
    sweep, which removes most crossings in layered plans), then by submission order.
    """
    by_key = {node.key: node for node in nodes}
    edge_list = [(src, dst) for src, dst in edges if src in by_key and dst in by_key and src != dst]
    ordered = _layers(nodes, edge_list)
    tallest = max((len(members) for members in ordered), default=0)
    step_x, step_y = NODE_WIDTH + COLUMN_GAP, NODE_HEIGHT + ROW_GAP
    width = max(2 * MARGIN + len(ordered) * step_x - COLUMN_GAP, 360)
    height = 2 * MARGIN + LEGEND_HEIGHT + max(tallest * step_y - ROW_GAP, 0)
    origin: dict[str, tuple[float, float]] = {}
    for index, members in enumerate(ordered):
        offset = (tallest - len(members)) * step_y / 2
        for row, node in enumerate(members):
            origin[node.key] = (MARGIN + index * step_x, MARGIN + LEGEND_HEIGHT + offset + row * step_y)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plan-dag" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="Dependency graph of {len(nodes)} subtasks" '
        f'style="{FONT};font-size:12px">',
        '<defs><marker id="dag-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>',
        _legend(nodes),
        '<g class="edges" fill="none" stroke="#94a3b8" stroke-width="1.3">',
    ]
    for src, dst in edge_list:
        (x1, y1), (x2, y2) = origin[src], origin[dst]
        x1, y1, y2 = x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, y2 + NODE_HEIGHT / 2
        bend = max((x2 - x1) / 2, COLUMN_GAP / 2)
        parts.append(
            f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f} {x2 - bend:.1f} {y2:.1f} {x2 - 1:.1f} {y2:.1f}" '
            f'marker-end="url(#dag-arrow)" data-edge="{escape(src)}&gt;{escape(dst)}"/>'
        )
    parts.append('</g><g class="nodes">')
    for members in ordered:
        for node in members:
            parts.append(_node(node, *origin[node.key]))
    parts.append("</g></svg>")
    return "".join(parts)


def _layers(nodes: Sequence[Node], edges: list[tuple[str, str]]) -> list[list[Node]]:
    """Return the columns in order, each ordered by its dependencies' mean row, then submission order."""
    parents: dict[str, list[str]] = defaultdict(list)
    for src, dst in edges:
        parents[dst].append(src)
    columns: dict[int, list[Node]] = defaultdict(list)
    for node in nodes:
        columns[node.column].append(node)
    row_of: dict[str, float] = {}
    ordered: list[list[Node]] = []
    for column in sorted(columns):
        members = sorted(columns[column], key=lambda node: node.position)
        for index, node in enumerate(members):
            placed = [row_of[key] for key in parents[node.key] if key in row_of]
            row_of[node.key] = sum(placed) / len(placed) if placed else float(index)
        members.sort(key=lambda node: (row_of[node.key], node.position))
        for index, node in enumerate(members):
            row_of[node.key] = float(index)
        ordered.append(members)
    return ordered


def summary_svg(counts: Mapping[str, int], *, batches: int) -> str:
    """Return an SVG summary of a plan too large to draw: one bar split by status, with the counts."""
    total = sum(counts.values())
    width, bar_height = 720, 26
    height = 2 * MARGIN + LEGEND_HEIGHT + bar_height + 22
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plan-dag-summary" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Summary of {total} subtasks" '
        f'style="{FONT};font-size:12px">',
        _legend_counts(counts),
    ]
    x, inner = float(MARGIN), width - 2 * MARGIN
    top = MARGIN + LEGEND_HEIGHT
    for status in _status_order(counts):
        if not counts[status]:
            continue
        share = inner * counts[status] / total
        parts.append(
            f'<rect x="{x:.1f}" y="{top}" width="{share:.1f}" height="{bar_height}" fill="{status_colour(status)}">'
            f"<title>{escape(status)}: {counts[status]}</title></rect>"
        )
        x += share
    parts.append(
        f'<text x="{MARGIN}" y="{top + bar_height + 16}" fill="#334155">'
        f"{total} subtasks in {batches} batches: too many to draw one by one.</text></svg>"
    )
    return "".join(parts)


def _node(node: Node, x: float, y: float) -> str:
    fill = status_colour(node.status)
    ink = text_colour(fill)
    tooltip = f"{node.key}\n{node.label}\n{node.status}\n{node.change}".replace("\n\n", "\n").strip()
    outline = 'stroke="#334155" stroke-opacity="0.35"'
    change = ""
    if node.change in CHANGE_OUTLINES:
        colour, width, dashes = CHANGE_OUTLINES[node.change]
        outline = f'stroke="{colour}" stroke-width="{width}"' + (f' stroke-dasharray="{dashes}"' if dashes else "")
        change = f' data-change="{node.change}"'
    body = (
        f'<g class="node" data-key="{escape(node.key)}" data-status="{escape(node.status)}"{change}>'
        f"<title>{escape(tooltip)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" fill="{fill}" {outline}/>'
        f'<text x="{x + 8:.1f}" y="{y + 16:.1f}" fill="{ink}" font-weight="600">{escape(_clip(node.key, KEY_CHARS))}'
        "</text>"
        f'<text x="{x + 8:.1f}" y="{y + 31:.1f}" fill="{ink}" font-size="11">'
        f"{escape(_clip(_caption(node), LABEL_CHARS))}</text></g>"
    )
    if node.href:
        return f'<a href="{escape(node.href)}">{body}</a>'
    return body


def _caption(node: Node) -> str:
    status = node.status.replace("_", " ")
    return f"{node.label} · {status}" if node.label else status


def _legend(nodes: Sequence[Node]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for node in nodes:
        counts[node.status] += 1
    return _legend_counts(counts)


def _legend_counts(counts: Mapping[str, int]) -> str:
    parts, x = ['<g class="legend">'], float(MARGIN)
    for status in _status_order(counts):
        if not counts[status]:
            continue
        text = f"{status.replace('_', ' ')} {counts[status]}"
        parts.append(
            f'<rect x="{x:.1f}" y="{MARGIN}" width="12" height="12" rx="2" fill="{status_colour(status)}"/>'
            f'<text x="{x + 16:.1f}" y="{MARGIN + 10}" fill="#334155">{escape(text)}</text>'
        )
        x += 16 + 7 * len(text) + 14
    parts.append("</g>")
    return "".join(parts)


def _status_order(counts: Mapping[str, int]) -> list[str]:
    known = [status for status in SUBTASK_STATUSES if status in counts]
    return known + sorted(status for status in counts if status not in SUBTASK_STATUSES)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
