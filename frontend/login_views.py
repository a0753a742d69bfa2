"""The portal's sign-in page: the password form (as ``MODELPORT_PASSWORD_LOGIN`` allows) and,
when single sign-on is on, "Sign in with <provider>"."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from teams import sso


class _PasswordPolicy:
    """Refuses a correct password that the sign-in policy does not allow, saying why."""

    policy_refusal = ""

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)  # type: ignore[misc]
        reason = sso.password_refusal(user)
        if reason:
            self.policy_refusal = reason
            raise ValidationError(reason, code="password_login_disabled")


class PolicyAuthenticationForm(_PasswordPolicy, AuthenticationForm):
    pass


class PolicyAdminAuthenticationForm(_PasswordPolicy, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True
    authentication_form = PolicyAuthenticationForm

    def post(self, request, *args: Any, **kwargs: Any):
        if not sso.password_form_shown():
            form = self.get_form()
            form.policy_refusal = sso.password_refusal(None) or ""  # type: ignore[attr-defined]
            return self.render_to_response(self.get_context_data(form=form), status=403)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(sso_enabled=sso.enabled(), sso_provider=sso.provider_name(),
                       password_off=not sso.password_form_shown(),
                       password_for_all=sso.password_for_all())
        return context
