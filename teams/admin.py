"""Django admin for platform engineers. Every save goes through services, so it is audited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count
from django.http import HttpRequest

from core.admin import ServiceErrorsMixin

from . import audit, services
from .models import ApiToken, AuditEvent, Installation, Membership, SsoIdentity, Team

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

User = get_user_model()


class _MemberCount(TypedDict):
    """What ``TeamAdmin.get_queryset`` annotates on each row."""

    members: int


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "role", "sso_managed", "created_at"]
    readonly_fields = ["sso_managed", "created_at"]


@admin.register(Team)
class TeamAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    actions: Sequence[str] = ()  # named, so quotas' subclass can extend them

    def get_queryset(self, request: HttpRequest):
        # The member count in one query with the page, not one per row.
        return super().get_queryset(request).annotate(members=Count("memberships"))

    @admin.display(description="Members", ordering="members")
    def member_count(self, team: WithAnnotations[Team, _MemberCount]) -> int:
        return team.members

    def get_readonly_fields(self, request, obj=None):
        return ["slug"] if obj else []

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        if change:
            services.update_team(actor=request.user, team=obj, name=obj.name,
                                 description=obj.description)
        else:
            created = services.create_team(actor=request.user, slug=obj.slug, name=obj.name,
                                           description=obj.description)
            obj.pk, obj.created_at, obj.updated_at = created.pk, created.created_at, \
                created.updated_at
            obj._state.adding, obj._state.db = False, created._state.db

    def save_formset(self, request, form, formset, change):
        team = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                services.remove_member(actor=request.user, team=team,
                                       username=deleted.instance.user.username)
                formset.deleted_objects.append(deleted.instance)
        for member_form in formset.forms:
            if member_form in formset.deleted_forms or not member_form.has_changed():
                continue
            data = member_form.cleaned_data
            if not data or not data.get("user"):
                continue
            if member_form.instance.pk:
                membership = services.change_member_role(
                    actor=request.user, team=team, username=data["user"].username,
                    role=data["role"])
                formset.changed_objects.append((membership, member_form.changed_data))
            else:
                membership = services.add_member(actor=request.user, team=team,
                                                 username=data["user"].username,
                                                 role=data["role"])
                formset.new_objects.append(membership)

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        services.delete_team(actor=request.user, team=obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for team in queryset:
            services.delete_team(actor=request.user, team=team)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["team", "user", "role", "created_at"]
    list_select_related = ["team", "user"]
    list_filter = ["role", "team"]
    search_fields = ["team__slug", "user__username"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # add members on the team page, where the service checks everything

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.remove_member(actor=request.user, team=obj.team, username=obj.user.username)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for membership in queryset.select_related("team", "user"):
            services.remove_member(actor=request.user, team=membership.team,
                                   username=membership.user.username)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "status", "created_at", "expires_at",
                    "last_used_at"]
    list_select_related = ["user"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["id", "user", "name", "prefix", "created_at", "expires_at", "revoked_at",
                       "last_used_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users create their own tokens; the secret is shown to them only

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead, so the audit trail keeps the token

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:
        count = 0
        for token in queryset:
            if token.is_revoked:
                continue
            services.revoke_token(actor=request.user, token=token)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).")


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin):
    """Read-only: the id every container, service and Kubernetes object of this installation
    carries (``modelport.installation``); changing it would orphan all of them."""

    list_display = ["uid", "created_at"]
    readonly_fields = ["uid", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_username", "action", "object_repr", "team_slug",
                    "source", "request_id"]
    list_filter = ["source", "object_type"]
    search_fields = ["actor_username", "action", "object_repr", "team_slug", "request_id"]
    date_hierarchy = "created_at"
    list_per_page = 50

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


admin.site.unregister(User)


@admin.register(User)
class AuditedUserAdmin(DjangoUserAdmin):
    def save_model(self, request, obj, form, change):
        before = None
        if change:
            before = audit.snapshot(User.objects.get(pk=obj.pk), services.USER_FIELDS)
        super().save_model(request, obj, form, change)
        services.record_user_change(actor=request.user, user=obj, before=before,
                                    created=not change)

    def delete_model(self, request, obj):
        audit.record(actor=request.user, action="user.deleted", obj=obj,
                     before=audit.snapshot(obj, services.USER_FIELDS))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            self.delete_model(request, user)


@admin.register(SsoIdentity)
class SsoIdentityAdmin(admin.ModelAdmin):
    """Read-only: which provider account each user signs in with, and their last groups.
    Written only by single sign-on (``sso_accounts.create_sso_user``, ``sync_sso_memberships``)."""

    list_display = ["user", "subject", "issuer", "admin_granted", "last_login_at"]
    search_fields = ["user__username", "subject", "user__email"]
    readonly_fields = ["user", "issuer", "subject", "groups", "admin_granted", "created_at",
                       "last_login_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
