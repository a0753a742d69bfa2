from django.urls import path

from . import views

app_name = "monitoring"
urlpatterns = [
    path("", views.index, name="index"),
    path("models/<str:name>/", views.model_page, name="model"),
    path("deployments/<str:name>/", views.deployment_page, name="deployment"),
    path("deployments/<str:name>/rules/", views.rule_create, name="rule-create"),
    path("deployments/<str:name>/rules/<int:pk>/delete/", views.rule_delete, name="rule-delete"),
]
