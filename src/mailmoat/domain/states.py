"""The states a message goes through in the log."""

from __future__ import annotations


class MessageState:
    REJECTED = "rejected"  # refused during SMTP; nothing kept
    QUARANTINED = "quarantined"  # kept, waiting for release or retention
    QUEUED = "queued"  # waiting for its first delivery attempt
    DEFERRED = "deferred"  # an attempt failed temporarily; it will be retried
    DELIVERED = "delivered"  # every recipient was accepted downstream
    FAILED = "failed"  # delivery ended with at least one recipient refused or expired
    DELETED = "deleted"  # its content was deleted from the quarantine


STATES = (
    MessageState.REJECTED,
    MessageState.QUARANTINED,
    MessageState.QUEUED,
    MessageState.DEFERRED,
    MessageState.DELIVERED,
    MessageState.FAILED,
    MessageState.DELETED,
)


class RecipientStatus:
    """Where one recipient of a message stands; None in the database while pending."""

    DELIVERED = "delivered"
    FAILED = "failed"
