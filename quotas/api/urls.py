from django.urls import path

from core.rest import Router

from . import views

router = Router()
router.register("resource-requests", views.ResourceRequestViewSet, basename="resource-request")

urlpatterns = [
    path("teams/<slug:team_slug>/quota/", views.TeamQuotaView.as_view(), name="team-quota"),
    *router.urls,
]
