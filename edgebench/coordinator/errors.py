"""What the store refuses. Every refusal is raised before anything is written, so a
refused operation inside a shared transaction (the writer's group commit) leaves nothing
behind."""

from __future__ import annotations

from edgebench.errors import EdgebenchError


class StoreError(EdgebenchError, ValueError):
    """A request the store refuses; the message is meant for the user."""


class NotFound(StoreError):
    pass


class StaleLease(StoreError):
    """A write under a lease that is no longer current (fencing)."""


class Conflict(StoreError):
    """The same result id with other content."""


class Ambiguous(StoreError):
    """An id prefix that more than one row starts with."""
