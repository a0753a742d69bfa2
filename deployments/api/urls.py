from django.urls import path

from core.rest import Router

from . import consumer_keys, host_artifacts, views

router = Router()
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("consumer-keys", consumer_keys.ConsumerKeyViewSet, basename="consumer-key")
urlpatterns = [
    path("hosts/<str:host>/artifacts/<str:sha256>/", host_artifacts.HostArtifactView.as_view(),
         name="host-artifact"),
    path("deployments/<str:name>/callers/", consumer_keys.CallersView.as_view(),
         name="deployment-callers"),
    *router.urls,
]
