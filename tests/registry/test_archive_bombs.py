"""Decompression bombs cost what reading their headers costs: refused before anything is
inflated, by total size, compression ratio and member count; the traversal and link checks hold
for every archive type.

"Before anything is inflated" is shown without timing: the bombs below are cut short right
after the header that gives them away. Code that inflated (or skipped over) the data first would
fail on the missing bytes with "corrupt", not refuse with the size or ratio message.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry import archives
from tests.fixtures import bearer_client

from .conftest import tar_with, zip_with

MLMODEL = b"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
GB = 1 << 30
LIMITS = archives.Limits(max_members=2000, max_bytes=2048 << 20, max_ratio=100)


def extract(tmp_path: Path, data: bytes, limits: archives.Limits = LIMITS) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "upload"
    archive.write_bytes(data)
    return archives.extract_model_archive(archive, tmp_path / "out", limits)


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def cut_short_tar_gz(size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """MLmodel, then a header declaring ``size`` bytes of data — and only 1 KB of it."""
    body = header("model/MLmodel", len(MLMODEL)) + MLMODEL.ljust(512, b"\0")
    body += header("model/weights.bin", size, kind) + b"\0" * 1024
    return gzip.compress(body)


def test_a_tar_member_declaring_a_bomb_is_refused_at_its_header(tmp_path):
    with pytest.raises(archives.ArchiveRefused, match=r"times its own size .* likely "
                                                      r"decompression bomb"):
        extract(tmp_path, cut_short_tar_gz(GB))
    roomy = archives.Limits(max_members=2000, max_bytes=512 << 20, max_ratio=10**9)
    with pytest.raises(archives.ArchiveRefused, match="expands to more than 512 MB"):
        extract(tmp_path, cut_short_tar_gz(GB), roomy)


def test_a_huge_pax_header_is_refused_without_being_read(tmp_path):
    """tarfile reads extended headers whole into memory; the stream under it refuses first."""
    with pytest.raises(archives.ArchiveRefused, match="decompression bomb"):
        extract(tmp_path, cut_short_tar_gz(GB, tarfile.XHDTYPE))
    with pytest.raises(archives.ArchiveRefused, match="decompression bomb"):
        extract(tmp_path, cut_short_tar_gz(GB, tarfile.GNUTYPE_LONGNAME))


def test_a_zip_whose_central_directory_declares_a_bomb_is_refused_before_inflating(tmp_path):
    data = bytearray(zip_with({"MLmodel": MLMODEL, "weights.bin": b"\0" * 1000}))
    entry = data.rindex(b"PK\x01\x02")  # the central directory entry of weights.bin
    data[entry + 24:entry + 28] = struct.pack("<I", 500 << 20)  # uncompressed size: 500 MB
    with pytest.raises(archives.ArchiveRefused, match="decompression bomb"):
        extract(tmp_path, bytes(data))


def zeros_tar(compress) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as bundle:
        for name, payload in (("model/MLmodel", MLMODEL), ("model/zeros.bin", bytes(100 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            bundle.addfile(info, io.BytesIO(payload))
    return compress(buffer.getvalue())


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar.bz2", "tar.xz"])
def test_real_bombs_are_refused_by_their_ratio_and_leave_nothing(
        kind, iris, team_engineer, settings):
    """100 MB of zeros in each format (a few hundred KB uploaded) through the API."""
    from .test_upload_safety import assert_nothing_stored

    bomb = {"zip": lambda: zip_with({"MLmodel": MLMODEL, "zeros.bin": bytes(100 << 20)}),
            "tar.gz": lambda: zeros_tar(gzip.compress),
            "tar.bz2": lambda: zeros_tar(bz2.compress),
            "tar.xz": lambda: zeros_tar(lambda b: lzma.compress(b, preset=0))}[kind]()
    assert len(bomb) < (1 << 20)
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile(f"model.{kind}", bomb), "format": "mlflow"},
        format="multipart")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "bad_archive"
    assert "decompression bomb" in response.json()["detail"]
    assert "MB" in response.json()["detail"]
    assert_nothing_stored(settings)


def test_an_archive_that_compresses_very_well_but_stays_small_is_accepted(tmp_path):
    """Ratios above the limit are fine below 64 MB expanded: small text-like models."""
    root = extract(tmp_path, tar_with({"model/MLmodel": MLMODEL,
                                       "model/zeros.bin": bytes(8 << 20)}))
    assert (root / "zeros.bin").stat().st_size == 8 << 20


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress],
                         ids=["tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_every_tar_flavour_is_extracted_and_keeps_the_traversal_and_link_checks(
        tmp_path, compress):
    def tar(entries: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as bundle:
            for info in entries:
                data = payloads.get(info.name)
                if data is not None:
                    info.size = len(data)
                bundle.addfile(info, io.BytesIO(data) if data is not None else None)
        return compress(buffer.getvalue())

    good = tar([tarfile.TarInfo("model/MLmodel")], {"model/MLmodel": MLMODEL})
    assert (extract(tmp_path / "ok", good) / "MLmodel").read_bytes() == MLMODEL
    escape = tarfile.TarInfo("model/../../escape")
    with pytest.raises(archives.ArchiveRefused, match="escapes the archive"):
        extract(tmp_path / "esc", tar([tarfile.TarInfo("model/MLmodel"), escape],
                                      {"model/MLmodel": MLMODEL, escape.name: b"x"}))
    link = tarfile.TarInfo("model/model.pkl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(archives.ArchiveRefused, match="links are not allowed"):
        extract(tmp_path / "lnk", tar([tarfile.TarInfo("model/MLmodel"), link],
                                      {"model/MLmodel": MLMODEL}))
    device = tarfile.TarInfo("model/null")
    device.type = tarfile.CHRTYPE
    with pytest.raises(archives.ArchiveRefused, match="not a regular file"):
        extract(tmp_path / "dev", tar([device], {}))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "esc" / "escape").exists()


def test_too_many_tar_members_are_refused_while_reading_headers(tmp_path):
    few = archives.Limits(max_members=3, max_bytes=2048 << 20)
    with pytest.raises(archives.ArchiveRefused, match="more than 3 members"):
        extract(tmp_path, tar_with({f"model/f{i}": b"x" for i in range(10)}), few)


def test_a_corrupt_compressed_stream_is_a_400_not_a_500(tmp_path):
    payload = {"model/MLmodel": MLMODEL, "model/conda.yaml": b"dependencies: [python]\n" * 5000}
    for i, compress in enumerate((gzip.compress, bz2.compress, lzma.compress)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as bundle:
            for name, data in payload.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                bundle.addfile(info, io.BytesIO(data))
        data = bytearray(compress(buffer.getvalue()))
        data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
        with pytest.raises(archives.ArchiveRefused, match=r"corrupt|Not a readable"):
            extract(tmp_path / str(i), bytes(data))
        with pytest.raises(archives.ArchiveRefused, match=r"corrupt|Not a readable"):
            extract(tmp_path / f"cut{i}", bytes(data[:len(data) // 2]))


def test_encrypted_or_oddly_compressed_zip_members_are_a_400(tmp_path):
    data = bytearray(zip_with({"MLmodel": MLMODEL}))
    entry = data.rindex(b"PK\x01\x02")
    data[entry + 10:entry + 12] = struct.pack("<H", 99)  # compression method 99: unknown
    with pytest.raises(archives.ArchiveRefused, match=r"corrupt|Not a readable"):
        extract(tmp_path / "method", bytes(data))
    data = bytearray(zip_with({"MLmodel": MLMODEL}))
    entry = data.rindex(b"PK\x01\x02")
    data[entry + 8] |= 1  # the encrypted flag
    with pytest.raises(archives.ArchiveRefused, match=r"corrupt|Not a readable"):
        extract(tmp_path / "encrypted", bytes(data))
