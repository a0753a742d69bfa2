from config.rest import Router

from . import views

router = Router()
router.register("targets", views.TargetViewSet, basename="target")

urlpatterns = router.urls
