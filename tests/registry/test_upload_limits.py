"""The upload limit and the role check come before the body.

The finding: a viewer pushed 2 GB (chunked, which the edge buffered whole and the size check
never saw) before the 413, and every upload's body was read before the role check. Now the
caller's role is checked before a byte of the body is read, the declared size before reading
too, and the files' bytes are counted as they stream in — through Django's test client (a
request stream that records what was read), a real threaded server and the edge in front of
gunicorn, as ``make run`` runs them.
"""

from __future__ import annotations

import io
import os
import socket

import pytest
from django.test.client import FakePayload
from rest_framework.test import APIClient

from registry.models import ModelVersion, VersionStatus
from tests.factories import make_token
from tests.fixtures import bearer_client

from .conftest import zip_with
from .test_upload_safety import MLMODEL, assert_nothing_stored

VERSIONS = "/api/v1/models/iris/versions/"
BOUNDARY = "modelport-test-boundary"
MB = 1024 * 1024


class WatchedPayload(FakePayload):
    """The request body as the WSGI server would stream it, recording how much was read."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.consumed = 0

    def read(self, size: int = -1, /) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data

    def readline(self, size: int = -1, /) -> bytes:
        data = super().readline(size)
        self.consumed += len(data)
        return data


def multipart(files: dict[str, bytes], fields: dict[str, str]) -> bytes:
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    for name, data in files.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                  f'filename="{name}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  .encode())
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def send(user, body: bytes, path: str = VERSIONS, method: str = "POST",
         declared: int | None = None) -> tuple[object, WatchedPayload]:
    stream = WatchedPayload(body)
    client = bearer_client(user) if user is not None else APIClient()
    response = client.generic(method, path, b"",
                              content_type=f"multipart/form-data; boundary={BOUNDARY}", **{
                                  "CONTENT_LENGTH": str(len(body) if declared is None
                                                        else declared),
                                  "wsgi.input": stream})
    return response, stream


@pytest.fixture
def big_upload() -> bytes:
    return multipart({"file": os.urandom(3 * MB)}, {"format": "mlflow"})


@pytest.fixture
def version(iris, team_engineer):
    return ModelVersion.objects.create(model=iris, version=1, status=VersionStatus.READY,
                                       source_format="mlflow", created_by=team_engineer)


@pytest.mark.django_db
def test_a_viewers_upload_is_refused_before_a_byte_of_it_is_read(
        iris, team_viewer, big_upload, settings):
    response, stream = send(team_viewer, big_upload)
    assert response.status_code == 403, response.content
    assert "engineer" in response.json()["detail"]
    assert stream.consumed == 0
    assert_nothing_stored(settings)


@pytest.mark.django_db
def test_a_viewers_reference_upload_is_refused_before_it_is_read(version, team_viewer,
                                                                 big_upload):
    response, stream = send(team_viewer, big_upload, f"{VERSIONS}1/reference/", "PUT")
    assert response.status_code == 403 and stream.consumed == 0


@pytest.mark.django_db
def test_another_teams_member_gets_a_404_before_the_body_is_read(iris, big_upload):
    from tests.factories import TeamFactory, UserFactory

    outsider = UserFactory(username="otto")
    TeamFactory(slug="elsewhere").memberships.create(user=outsider, role="maintainer")
    response, stream = send(outsider, big_upload)
    assert response.status_code == 404 and stream.consumed == 0


@pytest.mark.django_db
def test_a_declared_length_over_the_limit_is_413_before_reading(iris, team_engineer, settings,
                                                                big_upload):
    settings.MODELPORT_MAX_UPLOAD_MB = 1
    response, stream = send(team_engineer, big_upload)
    assert response.status_code == 413
    assert response.json() == {"detail": f"Upload is {len(big_upload) / MB:.1f} MB; the limit "
                                         "is 1 MB (MODELPORT_MAX_UPLOAD_MB).",
                               "code": "too_large"}
    assert stream.consumed == 0
    assert_nothing_stored(settings)


@pytest.mark.django_db
def test_files_are_counted_as_they_stream_and_stopped_at_the_limit(iris, team_engineer,
                                                                   settings):
    """A body whose declared length passes (files in two fields, each under the limit, the
    envelope allowance on top) is stopped once the files' bytes pass the limit: the rest of
    the stream is never read."""
    settings.MODELPORT_MAX_UPLOAD_MB = 1
    body = multipart({"file": os.urandom(MB - 1000), "reference_data": os.urandom(900_000)},
                     {"format": "mlflow"})
    assert len(body) < 2 * MB  # under the declared-length check (limit + 1 MB of envelope)
    response, stream = send(team_engineer, body)
    assert response.status_code == 413, response.content
    assert response.json() == {"detail": "Upload is over the limit of 1 MB "
                                         "(MODELPORT_MAX_UPLOAD_MB).", "code": "too_large"}
    assert stream.consumed < len(body)
    assert_nothing_stored(settings)


@pytest.mark.django_db
def test_an_engineers_upload_within_the_limit_is_still_taken(iris, team_engineer, settings):
    archive = zip_with({"MLmodel": MLMODEL})
    response, stream = send(team_engineer, multipart({"file": archive}, {"format": "mlflow"}))
    # Read whole and accepted as far as the size goes (this MLmodel has no loader to validate).
    assert stream.consumed > len(archive)
    assert response.status_code in (202, 400), response.content
    assert response.status_code != 413


@pytest.mark.django_db
def test_an_oversized_portal_upload_is_a_4xx_not_a_500(iris, team_engineer, settings):
    """The portal form is parsed by Django's CSRF check before any view: a 400 page there."""
    from django.test import Client

    settings.MODELPORT_MAX_UPLOAD_MB = 1
    client = Client(raise_request_exception=False)
    client.force_login(team_engineer)
    body = multipart({"file": os.urandom(MB + 5000)}, {"format": "mlflow"})
    response = client.generic("POST", "/models/iris/", body,
                              content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 400
    assert_nothing_stored(settings)


# --- a real server: the 403 comes while the client is still sending --------------------------
def raw_request(host: str, port: int, head: bytes, body_part: bytes) -> bytes:
    """Send the head and the first part of a body, then read the answer without sending the
    rest. A server that read the body first would never answer (the timeout makes that a
    failure, not a wait)."""
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def head(path: str, host: str, token: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n\r\n"
            ).encode()


@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_a_viewer_403_while_the_upload_is_still_coming(
        live_server, ml_team):
    from registry import services
    from teams.roles import Role
    from tests.factories import MembershipFactory, UserFactory

    engineer, viewer = UserFactory(username="eng2"), UserFactory(username="view2")
    MembershipFactory(team=ml_team, user=engineer, role=Role.ENGINEER)
    MembershipFactory(team=ml_team, user=viewer, role=Role.VIEWER)
    services.create_model(actor=engineer, team=ml_team, name="iris")
    _, token = make_token(viewer, name="raw")
    host, port = live_server.thread.host, live_server.thread.port
    answer = raw_request(host, port, head(VERSIONS, host, token, 200 * MB),
                         f"--{BOUNDARY}\r\n".encode() + b"x" * 1024)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


# --- the edge in front of gunicorn, as make run starts them ----------------------------------
@pytest.fixture(scope="module")
def small_front(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """gunicorn and the edge with MODELPORT_MAX_UPLOAD_MB=1."""
    from tests.deployments.test_edge import Front, _start, _wait_up
    from tests.test_make_run import _free_port
    from tests.workers.test_celery_worker import _database_url, _stop

    tmp = tmp_path_factory.mktemp("edge-uploads")
    logs = tmp / "logs"
    (tmp / "data" / "run").mkdir(parents=True)
    logs.mkdir()
    with django_db_blocker.unblock():
        database_url = _database_url()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
                "MODELPORT_DATA_DIR": str(tmp / "data"), "DATABASE_URL": database_url,
                "REDIS_URL": redis_url, "MODELPORT_MAX_UPLOAD_MB": "1"})
    sock = f"unix:{tmp / 'data' / 'run' / 'web.sock'}"
    port = _free_port()
    procs = [
        _start("web", ["-m", "gunicorn", "config.wsgi", "--bind", sock, "--workers", "1",
                       "--threads", "4"], env, logs),
        _start("edge", ["-m", "config.edge", "--port", str(port), "--upstream", sock],
               env, logs),
    ]
    _wait_up(f"http://127.0.0.1:{port}/healthz", procs, logs)
    yield Front(f"http://127.0.0.1:{port}", procs, logs, tmp / "data"), port
    _stop(*procs)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_through_the_edge_a_chunked_upload_is_stopped_at_the_limit(small_front, ml_team):
    """The finding's path: chunked, so the edge used to buffer all of it for WSGI."""
    from teams.roles import Role
    from tests.factories import MembershipFactory, UserFactory

    front, port = small_front
    engineer = UserFactory(username="eng3")
    MembershipFactory(team=ml_team, user=engineer, role=Role.ENGINEER)
    _, token = make_token(engineer, name="edge-chunked")
    # 2.5 MB of chunks (past the limit plus the envelope allowance), and no last chunk: the
    # edge answers without waiting for the rest.
    body = b"".join(chunk(os.urandom(64 * 1024)) for _ in range(40))
    answer = raw_request("127.0.0.1", port, head(VERSIONS, "127.0.0.1", token, None), body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300] + front.output().encode()[-2000:]
    # Declared over the limit: refused from the headers alone.
    answer = raw_request("127.0.0.1", port, head(VERSIONS, "127.0.0.1", token, 50 * MB), b"")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_through_the_edge_a_viewer_is_refused_while_still_sending(small_front, ml_team):
    from registry import services
    from teams.roles import Role
    from tests.factories import MembershipFactory, UserFactory

    front, port = small_front
    engineer, viewer = UserFactory(username="eng4"), UserFactory(username="view4")
    MembershipFactory(team=ml_team, user=engineer, role=Role.ENGINEER)
    MembershipFactory(team=ml_team, user=viewer, role=Role.VIEWER)
    services.create_model(actor=engineer, team=ml_team, name="iris")
    _, token = make_token(viewer, name="edge-viewer")
    answer = raw_request("127.0.0.1", port, head(VERSIONS, "127.0.0.1", token, MB // 2),
                         f"--{BOUNDARY}\r\n".encode() + b"x" * 4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300] + front.output().encode()[-2000:]
