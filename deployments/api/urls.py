from core.rest import Router

from . import views

router = Router()
router.register("deployments", views.DeploymentViewSet, basename="deployment")
urlpatterns = router.urls
