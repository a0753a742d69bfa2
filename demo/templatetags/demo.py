"""``{% demo_traffic_panel d %}``: the demo-traffic button, on the demo deployment only."""

from __future__ import annotations

from typing import Any

from django import template

from teams.roles import Role, at_least, is_platform_admin

from .. import services
from ..models import TrafficRun

register = template.Library()


def panel_context(request: Any, d: Any) -> dict[str, Any]:
    user = request.user
    run = TrafficRun.objects.filter(deployment=d).first()
    if run is not None and run.active:
        run = services.active_run(d) or TrafficRun.objects.filter(deployment=d).first()
    return {"d": d, "run": run, "request": request,
            "can_send": is_platform_admin(user) or at_least(d.team.role_of(user), Role.ENGINEER),
            "max_duration": services.MAX_TRAFFIC_S, "min_duration": services.MIN_TRAFFIC_S}


@register.inclusion_tag("demo/_traffic.html", takes_context=True)
def demo_traffic_panel(context: dict[str, Any], d: Any) -> dict[str, Any]:
    if not services.is_demo_deployment(d):
        return {"hidden": True}
    return panel_context(context["request"], d)
