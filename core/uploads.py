"""The upload size limit, counted as the bytes stream in.

``Content-Length`` alone cannot enforce ``MODELPORT_MAX_UPLOAD_MB``: a client may send none (the
edge forwards a chunked body with the length it counted) and views check it only if they run
before the body is parsed. ``LimitedUploadHandler`` is the first of Django's upload handlers
(``FILE_UPLOAD_HANDLERS``): it refuses a declared length over the limit before reading
anything, and stops reading once the files received pass it — a 413 naming the limit, whatever
the headers said. Non-file form fields are bounded by Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler

from .errors import DomainError

MB = 1024 * 1024
# Room for the multipart envelope and form fields around the files of an upload at the limit.
ENVELOPE_BYTES = MB


class UploadTooLarge(DomainError, RequestDataTooBig):
    """413 in the API (a ``DomainError``); a 400 page where Django handles it (the portal's
    CSRF check parses the form before any view runs), like Django's own ``RequestDataTooBig``."""

    status_code = 413
    code = "too_large"


def limit_bytes() -> int:
    return settings.MODELPORT_MAX_UPLOAD_MB * MB


def too_large(size: int | None = None, what: str = "Upload") -> UploadTooLarge:
    limit = f"{settings.MODELPORT_MAX_UPLOAD_MB} MB (MODELPORT_MAX_UPLOAD_MB)"
    if size is None:
        return UploadTooLarge(f"{what} is over the limit of {limit}.")
    return UploadTooLarge(f"{what} is {size / MB:.1f} MB; the limit is {limit}.")


def check_declared_length(content_length: Any) -> None:
    """Refuse a body whose ``Content-Length`` is already over the limit, before reading it."""
    try:
        length = int(content_length or 0)
    except (TypeError, ValueError):
        return
    if length > limit_bytes() + ENVELOPE_BYTES:
        raise too_large(length)


class LimitedUploadHandler(FileUploadHandler):
    """Counts every uploaded file's bytes as they arrive and stops the upload past the limit;
    the handlers after it (memory, temporary file) store what it lets through."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0
        check_declared_length(content_length)
        return None  # the normal multipart parsing goes on

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > limit_bytes():
            raise too_large()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None
