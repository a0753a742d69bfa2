from django.urls import path

from . import views

app_name = "monitoring"
urlpatterns = [
    path("", views.index, name="index"),
    path("models/<str:name>/", views.model_page, name="model"),
    path("deployments/<str:name>/", views.deployment_page, name="deployment"),
    path("models/<str:name>/settings/", views.model_settings, name="model-settings"),
    path("deployments/<str:name>/settings/", views.deployment_settings,
         name="deployment-settings"),
    path("deployments/<str:name>/rules/", views.rule_create, name="rule-create"),
    path("deployments/<str:name>/rules/<int:pk>/edit/", views.rule_edit, name="rule-edit"),
    path("deployments/<str:name>/rules/<int:pk>/delete/", views.rule_delete, name="rule-delete"),
    path("deployments/<str:name>/rules/<int:pk>/silence/", views.rule_silence,
         name="rule-silence"),
    path("deployments/<str:name>/alerts/<int:pk>/acknowledge/", views.alert_acknowledge,
         name="alert-acknowledge"),
]
