from django.urls import path

from . import views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="models"),
    path("<str:name>/", views.model_detail, name="model-detail"),
    path("<str:name>/versions/<int:number>/", views.version_detail, name="version-detail"),
    path("<str:name>/versions/<int:number>/events/", views.version_events,
         name="version-events"),
    path("<str:name>/versions/<int:number>/retry/", views.version_retry, name="version-retry"),
    path("<str:name>/aliases/", views.alias_set, name="alias-set"),
    path("<str:name>/transitions/<int:pk>/<str:decision>/", views.transition_decide,
         name="transition-decide"),
]
