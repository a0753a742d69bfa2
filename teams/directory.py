"""Finding people to add to a team: the add-member form's search as you type.

Who may search is who may add members to that team (its maintainers and platform admins, the
same check as ``services.add_member``); anyone else gets the same 404/403 as adding would give.
A search shows active users who are not yet members, matched on username, name or email, at
most ``LIMIT`` of them and only for a query of at least ``MIN_QUERY`` characters (shorter: an
exact username only), so the endpoint answers "who is dana?" without listing the directory.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Concat

from .access import require_team_role
from .models import Team
from .roles import Role

LIMIT = 10
MIN_QUERY = 2
MAX_QUERY = 100


def member_candidates(*, actor, team: Team, query: str) -> QuerySet:
    """Users ``actor`` may add to ``team`` matching ``query``: exact and prefix matches of the
    username first, then the rest by username."""
    require_team_role(actor, team, Role.MAINTAINER, "searching for people to add")
    query = (query or "").strip()[:MAX_QUERY]
    users = (get_user_model().objects.filter(is_active=True)
             .exclude(memberships__team=team))
    if not query:
        return users.none()
    if len(query) < MIN_QUERY:
        return users.filter(username__iexact=query)[:1]
    full_name = Concat("first_name", Value(" "), "last_name")
    matches = (users.annotate(full_name=full_name)
               .filter(Q(username__icontains=query) | Q(email__icontains=query)
                       | Q(full_name__icontains=query))
               .annotate(rank=Case(When(username__iexact=query, then=0),
                                   When(username__istartswith=query, then=1),
                                   default=2, output_field=IntegerField())))
    return matches.order_by("rank", "username").only(
        "username", "first_name", "last_name", "email")[:LIMIT]
