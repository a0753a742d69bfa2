from django.urls import path

from core.rest import Router

from . import host_artifacts, views

router = Router()
router.register("deployments", views.DeploymentViewSet, basename="deployment")
urlpatterns = [
    path("hosts/<str:host>/artifacts/<str:sha256>/", host_artifacts.HostArtifactView.as_view(),
         name="host-artifact"),
    *router.urls,
]
