from django.urls import path

from core.rest import Router

from . import views

router = Router()
router.register("models", views.RegisteredModelViewSet, basename="model")

versions = views.ModelVersionViewSet
aliases = views.AliasViewSet
transitions = views.TransitionRequestViewSet
M = "models/<str:model_name>"
urlpatterns = [
    path(f"{M}/versions/", versions.as_view({"get": "list", "post": "create"}),
         name="model-versions"),
    path(f"{M}/versions/<int:version>/", versions.as_view({"get": "retrieve"}),
         name="model-version-detail"),
    path(f"{M}/versions/<int:version>/artifact/", versions.as_view({"get": "artifact"}),
         name="model-version-artifact"),
    path(f"{M}/versions/<int:version>/events/", versions.as_view({"get": "events"}),
         name="model-version-events"),
    path(f"{M}/versions/<int:version>/reference/", versions.as_view({"put": "reference"}),
         name="model-version-reference"),
    path(f"{M}/versions/<int:version>/retry/", versions.as_view({"post": "retry"}),
         name="model-version-retry"),
    path(f"{M}/aliases/", aliases.as_view({"get": "list"}), name="model-aliases"),
    path(f"{M}/aliases/<str:alias>/", aliases.as_view({"put": "update", "delete": "destroy"}),
         name="model-alias-detail"),
    path(f"{M}/transition-requests/", transitions.as_view({"get": "list"}),
         name="model-transitions"),
    path(f"{M}/transition-requests/<int:pk>/approve/", transitions.as_view({"post": "approve"}),
         name="model-transition-approve"),
    path(f"{M}/transition-requests/<int:pk>/reject/", transitions.as_view({"post": "reject"}),
         name="model-transition-reject"),
    *router.urls,
]
