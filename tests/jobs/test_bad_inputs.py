"""Bad inputs are refused with a clear 4xx naming the problem, and leave nothing: no job row,
no reservation, no staged file, no stored object."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from core.errors import Conflict, DomainError, InvalidInput, NotFound
from core.uploads import UploadTooLarge
from jobs import services
from jobs.models import BatchJob
from quotas.models import Reservation
from registry.models import VersionStatus
from tests.jobs.conftest import csv_upload, iris_frame, parquet_upload

pytestmark = pytest.mark.django_db


def nothing_left() -> None:
    assert not BatchJob.objects.exists()
    assert not Reservation.objects.filter(owner__startswith="job:").exists()
    data = Path(settings.MODELPORT_DATA_DIR)
    staged = [p for p in (data / "jobs").rglob("*") if p.is_file()] if (data / "jobs").exists() \
        else []
    assert staged == []
    artifacts = data / "artifacts" / "jobs"
    assert not artifacts.exists() or not any(artifacts.rglob("*.*"))


def create(engineer, version, **kwargs):
    kwargs.setdefault("input_file", csv_upload(iris_frame(10)))
    return services.create_job(actor=engineer, team=version.model.team, model=version.model.name,
                               version=1, **kwargs)


def refused(engineer, version, error=InvalidInput, **kwargs) -> DomainError:
    with pytest.raises(error) as caught:
        create(engineer, version, **kwargs)
    nothing_left()
    return caught.value


def test_missing_column_is_named(engineer, iris_version):
    frame = iris_frame(10).drop(columns=["petal_width"])
    error = refused(engineer, iris_version, input_file=csv_upload(frame))
    assert "petal_width" in error.message and error.field == "input"


def test_uncastable_value_names_column_and_first_bad_row(engineer, iris_version):
    frame = iris_frame(10).astype({"sepal_width": object})
    frame.loc[6, "sepal_width"] = "wide"
    frame.loc[8, "sepal_width"] = "wider"
    error = refused(engineer, iris_version, input_file=csv_upload(frame))
    assert "'sepal_width'" in error.message and "row 7" in error.message
    assert error.extra == {"column": "sepal_width", "row": 7}


def test_zero_rows(engineer, iris_version):
    error = refused(engineer, iris_version, input_file=csv_upload(iris_frame(0)))
    assert error.code == "empty_input"


def test_malformed_files(engineer, iris_version):
    refused(engineer, iris_version,
            input_file=SimpleUploadedFile("x.parquet", b"PAR1 this is no parquet"))
    refused(engineer, iris_version, input_file=SimpleUploadedFile("x.csv", b""))


def test_oversized(engineer, iris_version, settings):
    settings.MODELPORT_JOB_MAX_INPUT_MB = 1
    big = iris_frame(60_000)
    error = refused(engineer, iris_version, UploadTooLarge, input_file=csv_upload(big))
    assert (error.code, error.status_code) == ("too_large", 413)


def test_unknown_output_columns(engineer, iris_version):
    error = refused(engineer, iris_version, output_columns=["customer"])
    assert error.field == "output_columns" and "customer" in error.message


def test_version_not_ready(engineer, iris_version):
    iris_version.status = VersionStatus.FAILED
    iris_version.save()
    error = refused(engineer, iris_version, error=Conflict)
    assert error.status_code == 409 and error.code == "version_not_ready"


def test_input_uri_outside_the_team_datasets(engineer, iris_version):
    for uri in ("https://example.com/x.csv", "artifacts:/sha256/ab/abc.zip",
                "artifacts:/datasets/other-team/x.csv", "artifacts:/datasets/../x",
                "jobs:/999/input"):
        refused(engineer, iris_version, input_file=None, input_uri=uri)


def test_stranger_cannot_see_the_model(iris_version):
    from tests.factories import UserFactory

    refused(UserFactory(), iris_version, error=NotFound)


def test_good_input_is_staged_with_chunks(engineer, iris_version):
    frame = iris_frame(1000)
    job = create(engineer, iris_version, input_file=parquet_upload(frame), parallelism=2,
                 output_columns=["id"])
    assert job.status == "queued" and job.rows_total == 1000 and job.chunks_total == 2
    assert list(job.chunks.values_list("rows", flat=True)) == [500, 500]
    assert Reservation.objects.filter(owner=job.owner).exists()
    import pyarrow.parquet as pq

    staged = pq.ParquetFile(Path(settings.MODELPORT_DATA_DIR) / "jobs" / str(job.pk) / "input"
                            / "input.parquet")
    assert staged.metadata.num_row_groups == 2
    assert staged.schema_arrow.names[:4] == list(frame.columns[1:5])
    assert job.input_name == f"jobs/{job.pk}/input.parquet" and len(job.input_sha256) == 64
    assert services.progress(job)["chunks"]["pending"] == 2


def test_input_uri_from_the_team_datasets_and_an_earlier_job(engineer, iris_version):
    from django.core.files.base import ContentFile

    from registry.storage import artifact_storage

    team = iris_version.model.team
    name = artifact_storage().save(f"datasets/{team.slug}/nightly.csv",
                                   ContentFile(iris_frame(50).to_csv(index=False).encode()))
    first = create(engineer, iris_version, input_file=None, input_uri=f"artifacts:/{name}",
                   output_columns=["id"])
    assert first.rows_total == 50 and first.input_uri == f"artifacts:/{name}"
    assert first.input_filename == ""
    again = create(engineer, iris_version, input_file=None, input_uri=f"jobs:/{first.pk}/input",
                   output_columns=["id"])
    assert again.rows_total == 50 and again.input_sha256 != first.input_sha256
    # Another team's job is not an input (the model check aside: the uri alone is refused).
    from tests.factories import TeamFactory

    with pytest.raises(InvalidInput) as caught:
        services._open_uri(TeamFactory(slug="other-team"), f"jobs:/{first.pk}/input")
    assert caught.value.field == "input_uri"
