"""The one exception type the request path raises for client and server problems.

Bodies follow MLflow's scoring-server error shape: ``{"error_code": ..., "message": ...}``.
"""

from __future__ import annotations


class ServingError(Exception):
    """An error answered to the client with ``status`` and an MLflow-style JSON body."""

    def __init__(self, message: str, error_code: str = "BAD_REQUEST", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status = status


class InputError(ServingError):
    """The request's data does not match the model signature (HTTP 400)."""

    def __init__(self, message: str, error_code: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message, error_code=error_code, status=400)


class MalformedRequest(ServingError):
    """The body is not valid JSON / CSV or not one of the accepted shapes (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code="MALFORMED_REQUEST", status=400)
