from core.rest import Router

from . import views

router = Router()
router.register("jobs", views.JobViewSet, basename="job")
router.register("job-schedules", views.JobScheduleViewSet, basename="job-schedule")
urlpatterns = router.urls
