from django.urls import path

from core.rest import Router

from . import views

router = Router()
router.register("targets", views.TargetViewSet, basename="target")

urlpatterns = [
    path("capacity/", views.CapacityView.as_view(), name="capacity"),
    *router.urls,
]
