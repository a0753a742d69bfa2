"""GPU chunks on several plain Docker hosts get devices of the host they are placed on (as a
GPU replica does), give them back when the chunk leaves, and never count a held device twice.
On PostgreSQL without containers (no GPU here): the host tasks are not run — the dispatch is
recorded — and the devices are inventory rows."""

from __future__ import annotations

import pytest

from compute.models import GpuAllocation, GpuDevice, Host
from jobs import admission
from jobs.hosts_batch import START, HostsBatchRuntime, chunk_gpu_owner
from jobs.models import ChunkStatus, HostChunk, JobChunk
from jobs.placement import NoHostForChunk
from tests.jobs.test_placement import hosts_target, make_job  # noqa: F401
from tests.quotas.conftest import set_limits
from workers.runtimes.batch import BatchSpec

pytestmark = pytest.mark.django_db


def spec_of(job) -> BatchSpec:
    return BatchSpec(job=job.name, image="img", model_dir="/m", input_dir="/i",
                     output_dir="/o", chunks=job.chunks_total, gpus=job.gpus)


def test_gpu_chunks_get_devices_of_their_host(hosts_target, team, engineer,  # noqa: F811
                                              django_capture_on_commit_callbacks):
    set_limits(team, gpus=3)  # parallelism 3 x 1 GPU reserved; 2 devices
    gpu_host = Host.objects.get(name="h-b")
    for device in ("0", "1"):
        GpuDevice.objects.create(host=gpu_host, device_id=device, model="T4")
    job = make_job(team, engineer, hosts_target, chunks=3)
    job.gpus = 1
    job.save()
    admission.admit(job)  # the reservation GPUs are allocated within
    sent: list[tuple] = []
    runtime = HostsBatchRuntime(hosts_target, dispatch=lambda *a: sent.append(a))

    with django_capture_on_commit_callbacks(execute=True):
        state0 = runtime.start_chunk(spec_of(job), 0, 1)
        state1 = runtime.start_chunk(spec_of(job), 1, 1)
    assert state0.host == state1.host == "h-b"  # h-a has no GPU
    assert [s[0] for s in sent] == [START, START]
    rows = {r.index: r for r in HostChunk.objects.filter(job=job)}
    assert rows[0].spec["gpu_device_ids"] == ["0"] and rows[1].spec["gpu_device_ids"] == ["1"]
    assert {a.owner for a in GpuAllocation.objects.active()} == {
        chunk_gpu_owner(job, 0), chunk_gpu_owner(job, 1)}

    with pytest.raises(NoHostForChunk):  # both devices held: no room, not counted twice
        runtime.start_chunk(spec_of(job), 2, 1)

    # Chunk 0 succeeds and the runner removes it: its device is free for chunk 2.
    JobChunk.objects.filter(job=job, index=0).update(status=ChunkStatus.SUCCEEDED)
    runtime.remove_chunk(job.name, 0)
    assert runtime.start_chunk(spec_of(job), 2, 1).host == "h-b"
    assert HostChunk.objects.get(job=job, index=2).spec["gpu_device_ids"] == ["0"]

    admission.release(job)  # the job's end gives every chunk's device back
    assert not GpuAllocation.objects.active().exists()
