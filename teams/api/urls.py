from django.urls import path

from core.rest import Router

from . import views

router = Router()
router.register("teams", views.TeamViewSet, basename="team")
router.register("tokens", views.TokenViewSet, basename="token")
router.register("audit", views.AuditEventViewSet, basename="audit")

members = views.MemberViewSet
urlpatterns = [
    path("cli-login/", views.CliLoginView.as_view(), name="cli-login"),
    path("platform/settings/", views.PlatformSettingsView.as_view(), name="platform-settings"),
    path("teams/<slug:team_slug>/members/",
         members.as_view({"get": "list", "post": "create"}), name="team-members"),
    path("teams/<slug:team_slug>/members/<str:username>/",
         members.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
         name="team-member-detail"),
    *router.urls,
]
