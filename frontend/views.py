"""Portal pages. Thin: read with querysets scoped to the user, change state through services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.portal import apply_service
from quotas import services as quota_services
from teams import services
from teams.access import get_visible_team, may_read_audit_log
from teams.filtersets import AuditEventFilterSet
from teams.models import ApiToken, AuditEvent, Team
from teams.roles import Role, at_least, is_platform_admin

from .forms import MemberAddForm, MemberRoleForm, TeamCreateForm, TeamEditForm, TokenCreateForm
from .requests import AuthenticatedRequest


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    form = TeamCreateForm(request.POST or None)
    if (request.method == "POST" and form.is_valid()
            and apply_service(request, form, lambda: services.create_team(actor=request.user,
                                                                    **form.cleaned_data))):
        messages.success(request, f"Team '{form.cleaned_data['slug']}' created.")
        return redirect("frontend:team-detail", slug=form.cleaned_data["slug"])
    query = request.GET.get("q", "").strip()
    teams = (Team.objects.visible_to(request.user)
             .annotate(member_count=Count("memberships")).order_by("slug"))
    if query:
        teams = teams.filter(slug__icontains=query) | teams.filter(name__icontains=query)
    return render(request, "frontend/team_list.html", {
        "teams": teams, "form": form, "query": query,
        "can_create": is_platform_admin(request.user),
    })


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    role = team.role_of(request.user)
    can_manage = is_platform_admin(request.user) or at_least(role, Role.MAINTAINER)
    add_form = MemberAddForm(request.POST if request.POST.get("intent") == "add" else None,
                             search_url=reverse("frontend:member-candidates", args=[slug]))
    edit_form = TeamEditForm(request.POST if request.POST.get("intent") == "edit" else None,
                             initial={"name": team.name, "description": team.description})
    if request.method == "POST":
        intent = request.POST.get("intent")
        if intent == "add" and add_form.is_valid():
            data = add_form.cleaned_data
            if apply_service(request, add_form, lambda: services.add_member(
                    actor=request.user, team=team, username=data["username"],
                    role=data["role"])):
                messages.success(request, f"Added {data['username']} as {data['role']}.")
                return redirect("frontend:team-detail", slug=slug)
        elif intent == "edit" and edit_form.is_valid() and apply_service(
                request, edit_form,
                lambda: services.update_team(actor=request.user, team=team,
                                             **edit_form.cleaned_data)):
            messages.success(request, "Team updated.")
            return redirect("frontend:team-detail", slug=slug)
    members = team.memberships.select_related("user").order_by("user__username")
    return render(request, "frontend/team_detail.html", {
        "team": team, "members": members, "my_role": role, "can_manage": can_manage,
        "add_form": add_form, "edit_form": edit_form, "roles": Role.choices,
        "usage": quota_services.usage(team),
    })


@login_required
@require_POST
def member_role(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    form = MemberRoleForm(request.POST)
    if form.is_valid() and apply_service(request, None, lambda: services.change_member_role(
            actor=request.user, team=team, username=username, role=form.cleaned_data["role"])):
        messages.success(request, f"{username} is now {form.cleaned_data['role']}.")
    elif not form.is_valid():
        messages.error(request, "Choose a valid role.")
    return redirect("frontend:team-detail", slug=slug)


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    if apply_service(request, None, lambda: services.remove_member(actor=request.user, team=team,
                                                           username=username)):
        messages.success(request, f"Removed {username} from {slug}.")
    return redirect("frontend:team-detail", slug=slug)


@login_required
def token_list(request: AuthenticatedRequest) -> HttpResponse:
    form = TokenCreateForm(request.POST or None)
    created_secret = None
    if request.method == "POST" and form.is_valid():
        result: dict = {}

        def create() -> None:
            result["token"], result["secret"] = services.create_token(
                actor=request.user, name=form.cleaned_data["name"],
                expires_in_days=form.cleaned_data["expires_in_days"])

        if apply_service(request, form, create):
            created_secret = result["secret"]
            form = TokenCreateForm()
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    response = render(request, "frontend/token_list.html", {
        "tokens": tokens, "form": form, "created_secret": created_secret,
    })
    if created_secret:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: AuthenticatedRequest, token_id: str) -> HttpResponse:
    token = ApiToken.objects.filter(user=request.user, pk=token_id).first()
    if token is None:
        messages.error(request, "No such token.")
    elif apply_service(request, None,
                       lambda: services.revoke_token(actor=request.user, token=token)):
        messages.success(request, f"Token '{token.name}' revoked.")
    return redirect("frontend:tokens")


@login_required
def audit_log(request: AuthenticatedRequest) -> HttpResponse:
    if not may_read_audit_log(request.user):
        return render(request, "frontend/forbidden.html", {
            "reason": "Only platform admins and team maintainers read the audit log."},
            status=403)
    filterset = AuditEventFilterSet(request.GET,
                                    queryset=AuditEvent.objects.visible_to(request.user))
    events = filterset.qs if filterset.is_valid() else AuditEvent.objects.none()
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "frontend/audit_log.html", {
        "filterset": filterset, "page": page, "query": query.urlencode(),
    })
