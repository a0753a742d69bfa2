from django.urls import path

from . import (
    cli_login_views,
    client_views,
    dashboard_views,
    key_views,
    quota_views,
    search_views,
    user_views,
    views,
)

app_name = "frontend"
urlpatterns = [
    path("", dashboard_views.dashboard, name="dashboard"),
    path("dashboard/live/", dashboard_views.dashboard_live, name="dashboard-live"),
    path("search/", search_views.search, name="search"),
    path("teams/", views.team_list, name="teams"),
    path("teams/<slug:slug>/", views.team_detail, name="team-detail"),
    path("teams/<slug:slug>/members/<str:username>/role", views.member_role, name="member-role"),
    path("teams/<slug:slug>/members/<str:username>/remove", views.member_remove,
         name="member-remove"),
    path("teams/<slug:slug>/people/", user_views.member_candidates, name="member-candidates"),
    path("users/", user_views.user_list, name="users"),
    path("welcome/<uidb64>/<token>/", user_views.WelcomeView.as_view(), name="welcome"),
    path("cli/login/", cli_login_views.cli_login_page, name="cli-login"),
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<uuid:token_id>/revoke", views.token_revoke, name="token-revoke"),
    path("audit/", views.audit_log, name="audit"),
    path("teams/<slug:slug>/quota/", quota_views.team_quota, name="team-quota"),
    path("teams/<slug:slug>/consumer-keys/", key_views.consumer_keys, name="consumer-keys"),
    path("teams/<slug:slug>/consumer-keys/<uuid:key_id>/edit/", key_views.consumer_key_edit,
         name="consumer-key-edit"),
    path("teams/<slug:slug>/consumer-keys/<uuid:key_id>/revoke/", key_views.consumer_key_revoke,
         name="consumer-key-revoke"),
    path("resource-requests/", quota_views.resource_requests, name="quota-requests"),
    path("resource-requests/<int:request_id>/decide", quota_views.decide_request,
         name="quota-decide"),
    path("capacity/", quota_views.capacity, name="capacity"),
    path("capacity/settings/", quota_views.platform_settings, name="platform-settings"),
    path("notifications/", quota_views.notifications, name="notifications"),
    # The Python client as a wheel, public (frontend/client_views.py).
    path("client/", client_views.client_page, name="client"),
    path("client/simple/", client_views.simple_index, name="client-simple"),
    path("client/simple/<str:project>/", client_views.simple_project,
         name="client-simple-project"),
    path("client/<str:filename>", client_views.wheel_file, name="client-wheel"),
]
