from django.urls import path

from . import views

app_name = "targets"

urlpatterns = [
    path("", views.targets, name="list"),
    path("<slug:name>/", views.change_target, name="change"),
]
