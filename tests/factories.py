"""factory_boy factories for the foundation's models."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from teams import tokens
from teams.models import ApiToken, Membership, Team
from teams.roles import Role

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class AdminFactory(UserFactory):
    username = factory.Sequence(lambda n: f"admin{n}")
    is_staff = True
    is_superuser = True


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"team-{n}")
    name = factory.LazyAttribute(lambda t: t.slug.replace("-", " ").title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ENGINEER


def make_token(user, *, name: str = "test", days: int = 30) -> tuple[ApiToken, str]:
    """A token row plus its secret, made directly (the service path is tested on its own)."""
    secret = tokens.generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=secret.prefix,
                                    digest=secret.digest,
                                    expires_at=timezone.now() + timedelta(days=days))
    return token, secret.token


def make_consumer_key(team, deployments, *, name: str = "search-api", rate_per_s=None,
                      burst=None, expires_at=None):
    """A consumer key row for ``deployments`` plus its secret, made directly (the service path
    is tested on its own)."""
    from deployments.models import ConsumerKey  # tests only: factories span every app

    secret = tokens.generate(tokens.CONSUMER_SCHEME)
    key = ConsumerKey.objects.create(team=team, name=name, prefix=secret.prefix,
                                     digest=secret.digest, rate_per_s=rate_per_s, burst=burst,
                                     expires_at=expires_at)
    key.deployments.set(deployments)
    return key, secret.token
