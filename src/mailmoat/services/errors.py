"""Errors raised by services. ``code`` is the HTTP-style status every front end maps."""

from __future__ import annotations


class ServiceError(Exception):
    code = 500

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors if errors is not None else [message]


class InvalidInput(ServiceError):
    code = 400


class Unauthorized(ServiceError):
    code = 401


class Forbidden(ServiceError):
    code = 403


class NotFound(ServiceError):
    code = 404


class Conflict(ServiceError):
    code = 409
