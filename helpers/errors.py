"""One error shape for the whole library: what went wrong (`message`) and what the learner should do (`fix`)."""

from __future__ import annotations


class WorkshopError(RuntimeError):
    """A failure a learner can act on. `str(error)` is the message, then a line `Fix: ...` when there is a fix.

    Subclasses name the part that failed (StackError, ClusterUnreachable, AwsUnavailable, ...) and may set a
    class-level `fix` used when the raiser gives none.
    """

    fix: str = ""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = type(self).fix if fix is None else fix
        super().__init__(f"{message}\nFix: {self.fix}" if self.fix else message)

    def explain(self) -> str:
        """The message and the fix on separate lines, for a notebook or a terminal."""
        return str(self)


class StackError(WorkshopError):
    """A local service could not be started, reached or stopped (raised by helpers.local.stack and the layers)."""
