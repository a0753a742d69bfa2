"""The batch job pages in Chromium, under the browser harness (axe-core clean, no console
error, nothing off the host, no sideways scroll): the "Run a batch job" form submits a CSV, the
job page shows the progress bar and the chunk table, htmx polling refreshes them as the job
advances, and Cancel cancels it.

The runner is not run here (its ticks are recorded instead of enqueued: tests/jobs/ of the
core stream run jobs on Docker). The job's advance is set in the database directly, as the
runner's tick would write it — chunk 0 succeeded, chunk 1 running, rows done and the rate — so
what is under test is the page, its polling and its buttons."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import BatchJob, JobChunk, JobStatus
from registry.models import RegisteredModel
from teams.roles import Role
from tests.deployments import conftest as deployment_fixtures
from tests.e2e.harness import checked_page
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory
from tests.jobs.conftest import iris_frame

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
iris_dir = deployment_fixtures.iris_dir


@pytest.fixture
def ticks(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr("jobs.passes.enqueue", calls.append)
    return calls


@pytest.fixture
def iris(iris_dir):
    from registry import mlmodel

    team = TeamFactory(slug="ml-search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    model = RegisteredModel.objects.create(name="iris", team=team)
    version = deployment_fixtures.make_version(model, 1, iris_dir)
    version.signature = mlmodel.read_metadata(iris_dir).signature
    version.save()
    return version


def advance(job: BatchJob) -> None:
    """What the runner's ticks write while the job runs (set directly: no runner here)."""
    now = timezone.now()
    JobChunk.objects.filter(job=job, index=0).update(status="succeeded", attempts=1,
                                                     rows_done=20, started_at=now,
                                                     finished_at=now)
    JobChunk.objects.filter(job=job, index=1).update(status="running", attempts=1,
                                                     rows_done=5, started_at=now)
    BatchJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, rows_done=25,
                                              rows_per_s=1234.0, started_at=now,
                                              status_message="Running: 2 chunk(s).")


@pytest.mark.parametrize("viewport", ["desktop", "mobile"])
def test_run_form_progress_chunks_and_cancel(live_server, browser, iris, ticks, tmp_path,
                                             viewport):
    csv = tmp_path / "customers.csv"
    iris_frame(40).to_csv(csv, index=False)
    with checked_page(browser, live_server.url, viewport, folder="jobs") as checked:
        checked.clear_shots()
        checked.login("eve", PASSWORD, check=None)
        checked.nav("Batch jobs")
        page = checked.page
        expect(page.get_by_role("heading", name="Batch jobs", exact=True)).to_be_visible()
        checked.check("jobs-empty")
        form = page.locator("#run-form")
        form.get_by_label("Team").select_option("ml-search")
        form.get_by_label("Model").fill("iris")
        form.get_by_label("Version").fill("1")
        form.get_by_label("Input file (CSV or Parquet)").set_input_files(str(csv))
        form.get_by_label("Parallelism").fill("2")
        form.get_by_label("Output format").select_option("csv")
        form.get_by_label("Output columns").fill("id")
        form.get_by_role("button", name="Run the job").click()
        page.wait_for_url("**/jobs/*/")
        job = BatchJob.objects.get()
        assert (job.trigger, job.rows_total, job.parallelism, job.output_columns) == \
            ("portal", 40, 2, ["id"])
        assert ticks == [job.pk]
        expect(page.get_by_role("heading", name=f"Job {job.pk}")).to_be_visible()
        expect(page.locator("#job-status .badge")).to_have_text("queued")
        progress = page.get_by_role("progressbar", name="Rows scored")
        expect(progress).to_have_attribute("max", "40")
        expect(progress).to_have_attribute("value", "0")
        expect(page.locator("#chunks-table tbody tr")).to_have_count(2)
        checked.check("job-queued")

        advance(job)  # the htmx poll (every 2 s while busy) shows it without a reload
        expect(page.locator("#progress-rows")).to_contain_text("25 / 40 rows (62.5%)",
                                                               timeout=15_000)
        expect(progress).to_have_attribute("value", "25")
        expect(page.locator("#progress-rate")).to_have_text("1234 rows/s")
        expect(page.locator("#progress-eta")).to_contain_text("ETA")
        expect(page.locator("#chunks-table tbody tr").nth(0)).to_contain_text("succeeded")
        expect(page.locator("#chunks-table tbody tr").nth(1)).to_contain_text("running")
        checked.check("job-running")

        page.get_by_role("link", name="Logs of the running (or last failed) chunk").click()
        expect(page.locator("#logs-panel pre")).to_be_visible()

        page.get_by_role("button", name="Cancel the job").click()
        expect(page.locator("#job-status .badge")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel the job")).to_have_count(0)
        job.refresh_from_db()
        assert job.status == JobStatus.CANCELLED
        checked.check("job-cancelled")

        checked.nav("Batch jobs")
        expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
        expect(page.locator("#jobs-table")).to_contain_text("cancelled")
        checked.check("jobs-list")


def test_a_refused_file_names_the_column_and_keeps_nothing(live_server, browser, iris, ticks,
                                                           tmp_path):
    frame = iris_frame(10).drop(columns=["petal_width"])
    csv = tmp_path / "bad.csv"
    frame.to_csv(csv, index=False)
    with checked_page(browser, live_server.url, "desktop", folder="jobs") as checked:
        checked.login("eve", PASSWORD, check=None)
        checked.goto("/jobs/?model=iris")
        form = checked.page.locator("#run-form")
        expect(form.get_by_label("Model")).to_have_value("iris")
        form.get_by_label("Team").select_option("ml-search")
        form.get_by_label("Version").fill("1")
        form.get_by_label("Input file (CSV or Parquet)").set_input_files(str(csv))
        form.get_by_role("button", name="Run the job").click()
        checked.page.wait_for_load_state()
        expect(checked.page.locator(".form-errors")).to_contain_text("petal_width")
        checked.check("job-refused")
    assert not BatchJob.objects.exists() and ticks == []
