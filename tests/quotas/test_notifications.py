"""The reusable notifications module: in-portal rows plus one email per person, after commit."""

from __future__ import annotations

import pytest
from django.core import mail

from notifications.models import Notification
from notifications.services import mark_read, notify
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_notify_creates_one_row_per_active_user_and_mails_after_commit(
        django_capture_on_commit_callbacks):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob", email="")
    gone = UserFactory(username="gone")
    gone.is_active = False
    gone.save()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = notify(users=[alice, alice, bob, gone, None], text="Quota raised",
                         link="/teams/x/quota/", kind="test")
        assert mail.outbox == []  # nothing leaves before the change commits
    for callback in callbacks:
        callback()
    assert [n.user.username for n in created] == ["alice", "bob"]
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]  # bob has no address
    assert "/teams/x/quota/" in mail.outbox[0].body


def test_a_failing_mail_server_does_not_break_the_change(settings, monkeypatch,
                                                        django_capture_on_commit_callbacks):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr("notifications.services.send_mass_mail", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        notify(users=[UserFactory(username="carol")], text="hello")
    assert Notification.objects.count() == 1


def test_mark_read_only_touches_the_users_own_notifications():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    notify(users=[alice, bob], text="x", email=False)
    assert mark_read(user=alice) == 1
    assert Notification.objects.unread().get().user == bob
