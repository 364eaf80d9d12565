"""The events package's exception hierarchy."""

from __future__ import annotations


class EventError(ValueError):
    """Base of every error raised by `events`."""


class DecodeError(EventError):
    """Bytes that are not a well-formed, canonical castnet event."""


class InvalidEvent(EventError):
    """A well-formed event that breaks a rule (bad signature, wrong author, bad body)."""


class BodyError(DecodeError):
    """An event body that does not match its kind's schema."""
