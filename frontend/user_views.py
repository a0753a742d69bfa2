"""Onboarding pages: platform admins create users (and hand over a welcome link), maintainers
find people to add to a team, new users set their password through their link. Thin: the
checks and changes are in ``teams.services`` and ``teams.directory``."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import INTERNAL_RESET_SESSION_TOKEN, PasswordResetConfirmView
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.decorators.http import require_GET

from core.errors import DomainError
from core.portal import apply_service
from teams import directory, services, welcome
from teams.access import get_visible_team, may_manage_users
from teams.models import Membership, Team

from .forms import UserCreateForm
from .requests import AuthenticatedRequest


def _forbidden(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, "frontend/forbidden.html", {"reason": reason}, status=403)


@login_required
def user_list(request: AuthenticatedRequest) -> HttpResponse:
    """Platform admins: everyone's accounts, and the form that creates one."""
    if not may_manage_users(request.user):
        return _forbidden(request, "Only platform admins create and list users.")
    teams = list(Team.objects.order_by("slug").values_list("slug", flat=True))
    form = UserCreateForm(request.POST or None, teams=teams)
    created = None
    if request.method == "POST" and request.POST.get("intent") == "link":
        created = _new_link(request)
        form = UserCreateForm(teams=teams)
    elif request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        result: dict = {}

        def create() -> None:
            result["user"] = services.create_user(
                actor=request.user, username=data["username"], email=data["email"],
                first_name=data["first_name"], last_name=data["last_name"],
                password=data["password"] or None, team=data["team"] or None, role=data["role"])

        if apply_service(request, form, create):
            created = _created(request, result["user"], data)
            form = UserCreateForm(teams=teams)
    query = request.GET.get("q", "").strip()[:100]
    users = get_user_model().objects.order_by("username").prefetch_related(
        Prefetch("memberships", queryset=Membership.objects.select_related("team")))
    if query:
        users = users.filter(Q(username__icontains=query) | Q(email__icontains=query)
                             | Q(first_name__icontains=query) | Q(last_name__icontains=query))
    response = render(request, "frontend/user_list.html", {
        "form": form, "created": created, "query": query,
        "page": Paginator(users, 50).get_page(request.GET.get("page")),
    })
    if created:
        response["Cache-Control"] = "no-store"  # the page holds a set-password link
    return response


def _new_link(request: AuthenticatedRequest) -> dict | None:
    user = get_user_model().objects.filter(username=request.POST.get("username", "")).first()
    if user is None:
        messages.error(request, "No such user.")
        return None
    result: dict = {}

    def issue() -> None:
        result["path"] = services.issue_welcome_link(actor=request.user, user=user)

    if not apply_service(request, None, issue):
        return None
    return {"user": user, "team": "", "role": "", "renewed": True, "hours": welcome.valid_hours(),
            "link": request.build_absolute_uri(result["path"]),
            "emailed": welcome.email_configured() and bool(user.email)}


def _created(request: HttpRequest, user, data: dict) -> dict:
    info = {"user": user, "team": data["team"], "role": data["role"], "link": None,
            "emailed": False}
    if not data["password"]:
        info["link"] = request.build_absolute_uri(welcome.welcome_path(user))
        info["emailed"] = welcome.email_configured() and bool(user.email)
        info["hours"] = welcome.valid_hours()
    return info


@login_required
@require_GET
def member_candidates(request: HttpRequest, slug: str) -> HttpResponse:
    """htmx: the people matching what was typed in the add-member form (``username``), as
    buttons that fill the field. Maintainers of the team and platform admins only."""
    try:
        team = get_visible_team(request.user, slug)
        query = request.GET.get("username", "")
        users = list(directory.member_candidates(actor=request.user, team=team, query=query))
    except DomainError as exc:
        return HttpResponse(exc.message, status=exc.status_code, content_type="text/plain")
    return render(request, "frontend/_member_candidates.html", {
        "users": users, "query": query.strip(), "limit": directory.LIMIT,
        "min_query": directory.MIN_QUERY, "team": team,
        "can_create": may_manage_users(request.user)})


class WelcomeView(PasswordResetConfirmView):
    """``/welcome/<uidb64>/<token>/``: a new user sets their password. Django's view moves the
    token from the URL into the session first (so it never leaks in a Referer); the service
    checks it again and audits the change."""

    template_name = "frontend/welcome.html"
    reset_url_token = "set-password"
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        token = self.request.session.get(INTERNAL_RESET_SESSION_TOKEN, "")
        try:
            services.set_password_with_link(user=self.user, token=token,
                                            password=form.cleaned_data["new_password1"])
        except DomainError as exc:
            form.add_error(None, exc.message)
            return self.form_invalid(form)
        del self.request.session[INTERNAL_RESET_SESSION_TOKEN]
        messages.success(self.request, f"Your password is set. Sign in as "
                                       f"{self.user.get_username()}.")
        return HttpResponseRedirect(self.success_url)

    def dispatch(self, *args, **kwargs):
        response = super().dispatch(*args, **kwargs)
        if not getattr(self, "validlink", False) and response.status_code == 200:
            response.status_code = 400  # an expired, used or mangled link
        return response
