from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from frontend.login_views import LoginView, PolicyAdminAuthenticationForm
from gateway import views as gateway_views
from monitoring import views as monitoring_views
from registry.mlflow_route import mlflow_route
from teams import oidc

from . import system
from .api_docs import RedocView, SwaggerUIView

api_v1: list[URLPattern | URLResolver] = [
    path("info/", system.info, name="info"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SwaggerUIView.as_view(url_name="api-v1:schema"), name="docs"),
    path("redoc/", RedocView.as_view(url_name="api-v1:schema"), name="redoc"),
    path("", include("teams.api.urls")),
    path("", include("registry.api.urls")),
    path("", include("quotas.api.urls")),
    path("", include("deployments.api.urls")),
    path("", include("jobs.api.urls")),
    path("", include("compute.api.urls")),
    path("", include("monitoring.api.urls")),
]

# What a failed request shows: JSON under /api/ and /serve/, the portal's own pages elsewhere.
handler400 = "config.error_views.bad_request"
handler403 = "config.error_views.permission_denied"
handler404 = "config.error_views.page_not_found"
handler500 = "config.error_views.server_error"

admin.site.site_header = "Modelport console"
admin.site.site_title = "Modelport console"
admin.site.index_title = "Platform administration"
admin.site.login_form = PolicyAdminAuthenticationForm  # MODELPORT_PASSWORD_LOGIN applies here too

urlpatterns = [
    path("healthz", system.healthz, name="healthz"),
    path("readyz", system.readyz, name="readyz"),
    path("metrics", monitoring_views.prometheus_metrics, name="prometheus-metrics"),
    path("metrics/replicas", monitoring_views.replica_metrics, name="prometheus-replica-metrics"),
    path("api/v1/", include((api_v1, "api-v1"))),
    path("admin/", admin.site.urls),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", oidc.PortalLogoutView.as_view(), name="logout"),
    # Single sign-on (404 while MODELPORT_OIDC_ISSUER is unset); the provider redirects to
    # /oidc/callback/, the redirect URI to register.
    path("oidc/authenticate/", oidc.SsoLoginView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.SsoCallbackView.as_view(), name="oidc_authentication_callback"),
    path("models/", include("registry.urls")),
    path("deployments/", include("deployments.urls")),
    path("jobs/", include("jobs.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("demo/", include("demo.urls")),
    path("serve/<str:name>/invocations", gateway_views.invocations,
         name="serve-invocations"),
    re_path(r"^serve/(?P<name>[^/]+)(?P<path>/v2(?:/.*)?)$", gateway_views.serve_v2,
            name="serve-v2"),
    # MLflow's tracking API and UI, behind the platform's sign-in (registry/mlflow_route.py).
    path("mlflow/", mlflow_route, name="mlflow"),
    path("mlflow/<path:rest>", mlflow_route, name="mlflow-path"),
    path("capacity/targets/", include("compute.urls")),
    path("", include("frontend.urls")),
]
