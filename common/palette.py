"""The colour of each status word, shared by the desk's badges and pictures and the command line's tables."""

# Subtasks, plans, executions and approvals share the words, so one colour each serves them all.
STATUS_COLOURS: dict[str, str] = {
    "pending": "#cbd5e1",
    "queued": "#93c5fd",
    "running": "#3b82f6",
    "waiting_approval": "#f59e0b",
    "done": "#22c55e",
    "failed": "#ef4444",
    "skipped": "#a8a29e",
    "cancelled": "#6b7280",
    "draft": "#cbd5e1",
    "approved": "#93c5fd",
    "in_progress": "#3b82f6",
    "completed": "#22c55e",
    "preparing": "#cbd5e1",
    "resumed": "#60a5fa",
    "paused": "#a78bfa",
    "rejected": "#ef4444",
    "expired": "#a8a29e",
}
UNKNOWN_COLOUR = "#e5e7eb"


def status_colour(status: str) -> str:
    """Return the fill colour of a status."""
    return STATUS_COLOURS.get(status, UNKNOWN_COLOUR)


def text_colour(fill: str) -> str:
    """Return black or white, whichever reads better on `fill` (#rrggbb)."""
    red, green, blue = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#111827" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "#ffffff"
