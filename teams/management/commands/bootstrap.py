"""Seed what a fresh install needs: the first platform admin and, unless disabled, a demo team.

Idempotent: running it again changes nothing and prints no password.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from teams import audit, services
from teams.models import Membership, Team
from teams.roles import Role

DEMO_TEAM = "demo"


class Command(BaseCommand):
    help = "Create the first platform admin (and a demo team) if they do not exist yet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="Do not create the demo team.")

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        admin = self._ensure_admin()
        if settings.MODELPORT_DEMO and not options["no_demo"]:
            self._ensure_demo_team(admin)

    def _ensure_admin(self):
        user_model = get_user_model()
        username = settings.MODELPORT_ADMIN_USERNAME
        admin = user_model.objects.filter(username=username).first()
        if admin is not None:
            self.stdout.write(f"Admin '{username}' exists; leaving it unchanged.")
            return admin
        password = settings.MODELPORT_ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        admin = user_model.objects.create_superuser(
            username=username, email=settings.MODELPORT_ADMIN_EMAIL, password=password)
        audit.record(actor=None, action="user.created", obj=admin,
                     after=audit.snapshot(admin, services.USER_FIELDS))
        if generated:
            bar = "=" * 64
            self.stdout.write(self.style.WARNING(
                f"\n{bar}\n  Platform admin created.\n  username: {username}\n"
                f"  password: {password}\n  (shown once; set MODELPORT_ADMIN_PASSWORD to choose it)"
                f"\n{bar}\n"))
        else:
            self.stdout.write(f"Platform admin '{username}' created with the configured password.")
        return admin

    def _ensure_demo_team(self, admin) -> None:
        team = Team.objects.filter(slug=DEMO_TEAM).first()
        if team is None:
            team = services.create_team(actor=admin, slug=DEMO_TEAM, name="Demo team",
                                        description="Created at first start to try Modelport.")
            self.stdout.write(f"Demo team '{DEMO_TEAM}' created.")
        if not Membership.objects.filter(team=team, user=admin).exists():
            services.add_member(actor=admin, team=team, username=admin.get_username(),
                                role=Role.MAINTAINER)
