from django.urls import path

from . import views

app_name = "demo"
urlpatterns = [
    path("traffic/<str:name>/", views.start_traffic, name="traffic"),
    path("traffic/<str:name>/status/", views.traffic_status, name="traffic-status"),
]
