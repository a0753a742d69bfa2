from django.urls import path

from . import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("<int:job_id>/", views.job_detail, name="detail"),
    path("<int:job_id>/status/", views.job_status, name="status"),
    path("<int:job_id>/logs/", views.job_logs, name="logs"),
    path("<int:job_id>/output/", views.job_output, name="output"),
    path("<int:job_id>/<str:verb>/", views.job_action, name="action"),
]
