"""Messages of the TUI: what the node link reports, and what views tell the app.

The link posts the first group to the app; the app hands them to the views that show them.
High-rate ones (progress, status) say so with ``can_replace``, so a backlog collapses to the
latest report instead of queueing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

# ---- from the node link ----


@dataclass
class NodeConnected(Message):
    """Connected (or reconnected) to the node; ``status`` is its answer to ``status``."""

    status: dict[str, Any]


@dataclass
class NodeLost(Message):
    """No node to talk to: never reached, or went away. The link retries in ``retry_in`` s."""

    reason: str
    retry_in: float
    attempt: int


@dataclass
class PeerChanged(Message):
    """A peer's membership status changed (topic ``peers``)."""

    peer: dict[str, Any]


@dataclass
class BlockCommitted(Message):
    """A block was committed (topic ``blocks``): its summary."""

    block: dict[str, Any]


@dataclass
class JobChanged(Message):
    """A block touched a job (topic ``jobs``): the job's summary."""

    job: dict[str, Any]


@dataclass
class ProgressReported(Message):
    """A training progress report (topic ``progress:<job id>``)."""

    report: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        # Only a later report of the same job supersedes: the curves keep other jobs' points.
        return (
            isinstance(message, ProgressReported)
            and message.report.get("job_id") == self.report.get("job_id")
            and message.report.get("step", 0) >= self.report.get("step", 0)
        )


@dataclass
class EventsDropped(Message):
    """The node dropped ``count`` events of ``topic`` for us: what we show may be stale."""

    topic: str
    count: int


# ---- between views and the app ----


@dataclass
class StatusUpdated(Message):
    """A fresh answer to ``status`` (the header and the network view show it)."""

    status: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatusUpdated)


@dataclass
class AccountChanged(Message):
    """The active account changed (None: locked); ``balance`` as last read from the ledger."""

    name: str | None
    account_id: str | None
    balance: int | None


@dataclass
class JobSubmitted(Message):
    """A job submitted through the form is on the ledger."""

    job_id: str
    height: int


@dataclass
class OpenJob(Message):
    """Show one job's detail."""

    job_id: str
