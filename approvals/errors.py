"""What refuses a vote or a decision: the errors the doors answer with (common/errors.py's DomainError)."""

from approvals.models import Approval
from approvals.selectors import NOT_AN_APPROVER
from common.errors import DomainError


class AlreadyDecided(DomainError):
    """The approval was decided before; `status` is what it became."""

    code = "already_decided"
    http_status = 409

    def __init__(self, approval: Approval) -> None:
        self.status = approval.status
        super().__init__(f"This approval is already {approval.status}.", details={"status": approval.status})


class AlreadyVoted(DomainError):
    """The user has voted on this approval before."""

    code = "already_voted"
    http_status = 409

    def __init__(self) -> None:
        super().__init__("You have already voted on this approval.")


class ApprovalNotFound(DomainError):
    code = "not_found"
    http_status = 404

    def __init__(self) -> None:
        super().__init__("No such approval.")


class VoteRefused(DomainError):
    """The user may see the approval but not vote on it; `reason` says why."""

    code = "permission_denied"
    http_status = 403
    MESSAGES = {
        NOT_AN_APPROVER: "You are not one of this approval's approvers.",
        "requester_cannot_approve": "The plan's owner may not vote on this approval (separate_requester).",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES.get(reason, "You may not vote on this approval."), details={"reason": reason})


class VoteInvalid(DomainError):
    code = "validation_error"
    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={field: [message]})


class ChangesNotApplicable(DomainError):
    """Changes were asked for where they cannot be: on a tool call, or with an approval."""

    code = "validation_error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, details={"request_changes": [message]})
