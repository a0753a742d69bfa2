from django.urls import path

from core.rest import Router

from . import views

router = Router()
router.register("alert-rules", views.AlertRuleViewSet, basename="alert-rule")
router.register("alerts", views.AlertViewSet, basename="alert")

deployment = views.DeploymentMonitoringViewSet
D = "deployments/<str:name>"
urlpatterns = [
    path("ingest/predictions/", views.IngestView.as_view(), name="ingest-predictions"),
    path(f"{D}/metrics/", deployment.as_view({"get": "metrics"}), name="deployment-metrics"),
    path(f"{D}/drift/", deployment.as_view({"get": "drift"}), name="deployment-drift"),
    path(f"{D}/feedback/", deployment.as_view({"post": "feedback"}), name="deployment-feedback"),
    path(f"{D}/monitoring/", deployment.as_view({"get": "monitoring_settings",
                                                         "put": "update_monitoring_settings"}),
         name="deployment-monitoring"),
    path("models/<str:model_name>/monitoring/",
         views.ModelMonitoringViewSet.as_view({"get": "retrieve", "put": "update"}),
         name="model-monitoring"),
    path("models/<str:model_name>/drift/batch/",
         views.ModelMonitoringViewSet.as_view({"get": "batch_drift"}), name="model-batch-drift"),
    *router.urls,
]
