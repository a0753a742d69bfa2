"""Platform admins create users: role check, duplicates, atomicity, audit, welcome links
(Django's password-reset tokens: one time, expiring) and the welcome email."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core import mail

from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from teams import services, welcome
from teams.models import AuditEvent, Membership

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_admin_creates_an_invited_user_in_a_team(admin_user, team,
                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        user = services.create_user(actor=admin_user, username="dana", email="dana@corp.example",
                                    first_name="Dana", last_name="Scully", team=team.slug,
                                    role="maintainer")
    assert not user.has_usable_password()
    assert Membership.objects.get(user=user, team=team).role == "maintainer"
    created = AuditEvent.objects.get(action="user.created")
    assert created.actor_username == "root"
    assert created.after["username"] == "dana" and created.after["sign_in"] == "welcome link"
    assert "password" not in created.after
    assert AuditEvent.objects.filter(action="membership.created", object_repr__contains="dana")
    # The test settings' locmem backend delivers: the link goes by email too, after commit.
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["dana@corp.example"]
    assert "/welcome/" in mail.outbox[0].body


def test_no_email_through_the_console_backend(admin_user, settings,
                                              django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.create_user(actor=admin_user, username="dana", email="dana@corp.example")
    assert len(callbacks) == 1  # the send was scheduled, and it declined: no secret in the log
    assert not welcome.email_configured()


def test_initial_password_is_validated_and_set(admin_user):
    with pytest.raises(InvalidInput) as weak:
        services.create_user(actor=admin_user, username="dana", email="d@corp.example",
                             password="123")
    assert weak.value.field == "password"
    assert not User.objects.filter(username="dana").exists()
    user = services.create_user(actor=admin_user, username="dana", email="d@corp.example",
                                password="a-long-enough-passphrase")
    assert user.check_password("a-long-enough-passphrase")
    assert AuditEvent.objects.get(action="user.created").after["sign_in"] == "initial password"


@pytest.mark.parametrize("fixture", ["maintainer", "engineer", "outsider"])
def test_only_platform_admins_create_users(fixture, request):
    actor = request.getfixturevalue(fixture)
    with pytest.raises(PermissionDenied, match="Only platform admins may create users"):
        services.create_user(actor=actor, username="dana", email="d@corp.example")
    assert not User.objects.filter(username="dana").exists()


def test_duplicates_are_conflicts_naming_the_field(admin_user, engineer):
    with pytest.raises(Conflict) as same_name:
        services.create_user(actor=admin_user, username="EVE", email="new@corp.example")
    assert same_name.value.field == "username" and same_name.value.status_code == 409
    with pytest.raises(Conflict) as same_email:
        services.create_user(actor=admin_user, username="eve2", email="EVE@example.com")
    assert same_email.value.field == "email"
    assert "already exists" in same_email.value.message


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"username": "", "email": "a@b.example"}, "username"),
    ({"username": "has space", "email": "a@b.example"}, "username"),
    ({"username": "dana", "email": "not-an-email"}, "email"),
    ({"username": "dana", "email": "a@b.example", "team": "nope", "role": "engineer"}, "team"),
    ({"username": "dana", "email": "a@b.example", "team": "ml-search", "role": "boss"}, "role"),
])
def test_bad_input_names_the_field_and_writes_nothing(admin_user, team, kwargs, field):
    with pytest.raises((InvalidInput, NotFound)) as refused:
        services.create_user(actor=admin_user, **kwargs)
    assert refused.value.field == field
    assert not User.objects.filter(username="dana").exists()
    assert not AuditEvent.objects.filter(action="user.created").exists()


def test_the_welcome_link_sets_the_password_once(admin_user, client):
    user = services.create_user(actor=admin_user, username="dana", email="d@corp.example")
    path = welcome.welcome_path(user)
    landing = client.get(path)
    assert landing.status_code == 302  # Django moves the token out of the URL into the session
    form_url = landing["Location"]
    assert client.get(form_url).status_code == 200
    weak = client.post(form_url, {"new_password1": "123", "new_password2": "123"})
    assert weak.status_code == 200 and b"too short" in weak.content
    done = client.post(form_url, {"new_password1": "a-long-enough-passphrase",
                                  "new_password2": "a-long-enough-passphrase"})
    assert done.status_code == 302 and done["Location"] == "/login/"
    user.refresh_from_db()
    assert user.check_password("a-long-enough-passphrase")
    assert AuditEvent.objects.get(action="user.password_set").actor_username == "dana"
    # Used once: the same link is refused now (the password hash is part of the token).
    again = client.get(path)
    assert again.status_code == 400 and b"invalid, was already used or has expired" in again.content
    assert client.post("/login/", {"username": "dana",
                                   "password": "a-long-enough-passphrase"}).status_code == 302


def test_an_expired_link_is_refused(admin_user, client, settings):
    user = services.create_user(actor=admin_user, username="dana", email="d@corp.example")
    old = PasswordResetTokenGenerator()
    old._now = lambda: datetime.now() - timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 60)
    uidb64 = welcome.welcome_path(user).split("/")[2]
    response = client.get(f"/welcome/{uidb64}/{old.make_token(user)}/")
    assert response.status_code == 400
    with pytest.raises(InvalidInput, match="invalid or has expired"):
        services.set_password_with_link(user=user, token=old.make_token(user),
                                        password="a-long-enough-passphrase")
    user.refresh_from_db()
    assert not user.has_usable_password()
