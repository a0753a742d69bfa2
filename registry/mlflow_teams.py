"""Which Modelport team an MLflow registered model belongs to, and whether a user may register
there. One answer for both the registry API (``mlflow_registry_api``: where a new registered
model goes) and the one-off import of pre-upgrade versions (only for each version's creator):
the Modelport model of that name, else the team named by the tag ``modelport.team``, else the
only team where the registered model's creator (failing that, the acting user) is an engineer
or maintainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from teams.models import Membership, Team
from teams.roles import Role, at_least, is_platform_admin

from .models import MlflowObject, MlflowObjectKind, RegisteredModel, name_validator

TEAM_TAG = "modelport.team"
WRITER_ROLES = (Role.ENGINEER, Role.MAINTAINER)


@dataclass(frozen=True)
class Target:
    """Where versions of ``name`` go: an existing model, or a team for a new one; or why none."""

    name: str
    model: RegisteredModel | None = None
    team: Team | None = None
    reason: str = ""


def writer_teams(user) -> list[Team]:
    """Teams where ``user`` may register (engineer or maintainer)."""
    if user is None or not user.is_active:
        return []
    return [m.team for m in Membership.objects.filter(user=user, role__in=WRITER_ROLES)
            .select_related("team").order_by("team__slug")]


def invalid_name(name: str) -> str:
    """Why ``name`` cannot be a Modelport model, or an empty string."""
    try:
        name_validator(name)
    except ValidationError as exc:
        return f"'{name}' is not a valid Modelport model name: {exc.messages[0]}"
    return ""


def _only_team(user, who: str) -> Target | Team:
    teams = writer_teams(user)
    if len(teams) == 1:
        return teams[0]
    if not teams:
        return Target(name="", reason=f"{who} is an engineer or maintainer in no team.")
    slugs = ", ".join(t.slug for t in teams)
    return Target(name="", reason=f"{who} is an engineer in several teams ({slugs}): name one "
                                  f"with the tag {TEAM_TAG}=<team> on the registered model, or "
                                  "create the model in Modelport first.")


def resolve(name: str, *, tags: dict[str, str], acting_user) -> Target:
    """Where versions of ``name`` land (see the module docstring)."""
    model = RegisteredModel.objects.select_related("team").filter(name=name).first()
    if model is not None:
        return Target(name=name, model=model, team=model.team)
    if problem := invalid_name(name):
        return Target(name=name, reason=problem)
    slug = tags.get(TEAM_TAG, "")
    if slug:
        team = Team.objects.filter(slug=slug).first()
        return (Target(name=name, team=team) if team is not None else
                Target(name=name, reason=f"the tag {TEAM_TAG} names team '{slug}', which "
                                         "does not exist."))
    creator_id = (MlflowObject.objects.filter(kind=MlflowObjectKind.REGISTERED_MODEL, key=name)
                  .values_list("created_by", flat=True).first())
    creator = acting_user
    if creator_id is not None and creator_id != getattr(acting_user, "pk", None):
        creator = get_user_model().objects.filter(pk=creator_id).first()
    who = f"'{creator.get_username()}'" if creator is not None else "Its creator"
    found = _only_team(creator, who)
    if isinstance(found, Target):
        return Target(name=name, reason=found.reason)
    return Target(name=name, team=found)


def may(user, team: Team, minimum: Role = Role.ENGINEER) -> bool:
    if user is None or not user.is_active:
        return False
    return is_platform_admin(user) or at_least(team.role_of(user), minimum)


def refusal(user, target: Target, minimum: Role = Role.ENGINEER) -> str:
    """Why ``user`` may not write versions of ``target`` (empty: they may)."""
    if target.team is None:
        return target.reason
    if may(user, target.team, minimum):
        return ""
    who = user.get_username() if user is not None else "nobody"
    role = target.team.role_of(user) if user is not None else None
    owner = f"Model '{target.name}' belongs to team '{target.team.slug}'" if target.model \
        else f"Model '{target.name}' would be created in team '{target.team.slug}'"
    return (f"{owner}; '{who}' is {role or 'not a member'} there and this needs "
            f"{minimum.value} or higher.")
