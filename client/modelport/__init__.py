"""Python client for the Modelport ML platform."""

from .client import Client
from .errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ModelportError,
    NotFound,
    OperationFailed,
    PermissionDenied,
    RateLimited,
    ServerError,
    TimeoutExpired,
    TooLarge,
)

__all__ = [
    "AuthenticationError", "BadRequest", "Client", "Conflict", "ModelportError", "NotFound",
    "OperationFailed", "PermissionDenied", "RateLimited", "ServerError", "TimeoutExpired",
    "TooLarge",
]
__version__ = "0.1.0"
