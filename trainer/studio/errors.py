"""One error type with an HTTP status: the routes answer it as JSON {"error": message}."""
from __future__ import annotations

from ..errors import LoraStudioError


class StudioError(LoraStudioError):
    """A request the studio refuses. `status` is the HTTP status; the message names the problem and the fix."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)
