"""Which kind of model an upload is, told from its name and first bytes.

Nothing here unpickles or extracts: the name's suffix and a few magic bytes decide, and the
archive itself is read (safely) later by ``registry.archives``.
"""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile

from core.errors import InvalidInput

FORMATS = ("mlflow", "sklearn")
ACCEPTED = ("a scikit-learn estimator saved with joblib or pickle (.joblib, .pkl or .pickle), "
            "or an MLflow model directory packed as .zip or .tar.gz (with its MLmodel file "
            "at the top)")
SKLEARN_SUFFIXES = (".joblib", ".pkl", ".pickle")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


class UnknownFormat(InvalidInput):
    code = "unknown_format"


def _head(upload: UploadedFile, size: int = 512) -> bytes:
    upload.seek(0)
    head = upload.read(size)
    upload.seek(0)
    return head if isinstance(head, bytes) else b""


def _is_archive(head: bytes) -> bool:
    """zip, or a tar plain or compressed (gzip, bz2, xz): what ``archives`` can extract."""
    return (head.startswith(b"PK\x03\x04") or head[:2] == b"\x1f\x8b" or head[:3] == b"BZh"
            or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar")


def infer_format(upload: UploadedFile) -> str:
    """``sklearn`` or ``mlflow`` for ``upload``; else 400 naming the kinds accepted.

    The suffix wins (a gzip-compressed joblib file starts like a .tar.gz); without a known
    suffix, an archive is taken for an MLflow model and a pickle (protocol 2 or later starts
    with 0x80) for a scikit-learn estimator."""
    name = (upload.name or "").lower()
    if name.endswith(SKLEARN_SUFFIXES):
        return "sklearn"
    head = _head(upload)
    if name.endswith(ARCHIVE_SUFFIXES) or _is_archive(head):
        return "mlflow"
    if head[:1] == b"\x80":
        return "sklearn"
    shown = upload.name or "The file"
    raise UnknownFormat(f"Cannot tell what kind of model '{shown}' is. Upload {ACCEPTED}.",
                        field="file")
