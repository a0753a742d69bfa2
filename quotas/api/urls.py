from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("resource-requests", views.ResourceRequestViewSet, basename="resource-request")

urlpatterns = [
    path("teams/<slug:team_slug>/quota/", views.TeamQuotaView.as_view(), name="team-quota"),
    path("capacity/", views.CapacityView.as_view(), name="capacity"),
    *router.urls,
]
