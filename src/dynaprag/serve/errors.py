"""The one error type of the HTTP layer: an HTTP status with OpenAI's error shape.

Kept in its own module so the request logic (:mod:`dynaprag.serve.app`) and the FastAPI
routes (:mod:`dynaprag.serve.routes`) both use it without importing each other.
"""
from __future__ import annotations


class ApiError(Exception):
    """An error with its HTTP status, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type, self.headers = type, headers or {}
