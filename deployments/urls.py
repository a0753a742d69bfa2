from django.urls import path

from . import views

app_name = "deployments"
urlpatterns = [
    path("", views.deployment_list, name="list"),
    path("<str:name>/", views.deployment_detail, name="detail"),
    path("<str:name>/status/", views.deployment_status, name="status"),
    path("<str:name>/logs/", views.deployment_logs, name="logs"),
    path("<str:name>/<str:verb>/", views.deployment_action, name="action"),
]
