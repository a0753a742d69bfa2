from django.urls import path

from . import edit_views, views

app_name = "deployments"
urlpatterns = [
    path("", views.deployment_list, name="list"),
    # Three segments: no deployment name can shadow these.
    path("deploy/<str:model>/<int:number>/", edit_views.deploy_version, name="deploy-version"),
    path("deploy/<str:model>/<int:number>/<str:name>/", edit_views.deploy_version_to,
         name="deploy-version-to"),
    path("<str:name>/", views.deployment_detail, name="detail"),
    path("<str:name>/status/", views.deployment_status, name="status"),
    path("<str:name>/logs/", views.deployment_logs, name="logs"),
    path("<str:name>/edit/", edit_views.deployment_edit, name="edit"),
    path("<str:name>/<str:verb>/", views.deployment_action, name="action"),
]
