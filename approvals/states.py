"""An approval's statuses and the changes allowed between them: decided once, never again."""

from approvals.models import ApprovalStatus as A

APPROVAL_TRANSITIONS: dict[str, frozenset[str]] = {
    A.PENDING: frozenset({A.APPROVED, A.REJECTED, A.EXPIRED, A.CANCELLED}),
    A.APPROVED: frozenset(),
    A.REJECTED: frozenset(),
    A.EXPIRED: frozenset(),
    A.CANCELLED: frozenset(),
}

APPROVAL_DECIDED = frozenset({A.APPROVED, A.REJECTED, A.EXPIRED, A.CANCELLED})
