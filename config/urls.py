from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import system

api_v1 = [
    path("info/", system.info, name="info"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-v1:schema"), name="docs"),
    path("", include("teams.api.urls")),
]

admin.site.site_header = "Modelport console"
admin.site.site_title = "Modelport console"
admin.site.index_title = "Platform administration"

urlpatterns = [
    path("healthz", system.healthz, name="healthz"),
    path("readyz", system.readyz, name="readyz"),
    path("api/v1/", include((api_v1, "api-v1"))),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("frontend.urls")),
]
