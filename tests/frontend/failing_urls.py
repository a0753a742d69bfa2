"""The real URLconf plus two views that raise: what a bug in a view shows (the 500 handlers
are looked up on the URLconf in use, so they are re-exported)."""

from django.urls import path

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def _boom(request):
    raise RuntimeError("a bug in a view")


urlpatterns = [path("boom/", _boom), path("api/v1/boom/", _boom), *urlpatterns]
