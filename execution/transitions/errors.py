"""The errors of a status change: not allowed by the table, or lost to a concurrent change."""

from common.errors import DomainError


class TransitionNotAllowed(DomainError):
    """The status table does not allow this change from the current status."""

    code = "invalid_state"
    http_status = 409

    def __init__(self, subject: str, current: str, target: str, message: str = "") -> None:
        self.subject = subject
        self.current_status = current
        self.target = target
        super().__init__(
            message or f"The {subject} is {current}; it cannot become {target}.", details={"current_status": current}
        )


class TransitionConflict(TransitionNotAllowed):
    """The status changed after the caller read it: a concurrent change won."""

    def __init__(self, subject: str, current: str, target: str, expected: str) -> None:
        super().__init__(
            subject,
            current,
            target,
            f"The {subject} changed from {expected} to {current} meanwhile; it was not made {target}.",
        )
        self.expected = expected
