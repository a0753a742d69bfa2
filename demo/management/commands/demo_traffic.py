"""``make demo-traffic``: a few minutes of realistic traffic to the demo deployment.

Runs in this process (progress on the terminal) and records the run like the deployment page's
button does, so the page shows it too. Needs ``make run`` running (the gateway and the workers).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import DomainError
from demo import services
from demo.models import TrafficRun, TrafficStatus
from deployments.models import Deployment


class Command(BaseCommand):
    help = "Send demo traffic (with a drifted segment and ground truth) through the gateway."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--duration", type=int, default=180,
                            help=f"Seconds of traffic ({services.MIN_TRAFFIC_S}-"
                                 f"{services.MAX_TRAFFIC_S}, default 180).")

    def handle(self, *args, **options) -> None:
        name = services.deployment_name()
        d = Deployment.objects.select_related("team", "model").filter(name=name).first()
        if d is None:
            raise CommandError(f"No demo deployment '{name}' yet: start `make run` and wait for "
                               "the demo to be ready.")
        try:
            actor = services.admin_user()
            run = services.start_traffic(actor=actor, deployment=d,
                                         duration=options["duration"], enqueue=False)
        except (DomainError, services.DemoError) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from exc
        self.stdout.write(f"Sending {run.duration_s} s of traffic to {d.name} "
                          f"(run #{run.pk}; the middle third drifts).")

        shown = [-10]

        def show(current: TrafficRun) -> None:
            if current.progress - shown[0] >= 5:
                shown[0] = current.progress
                self.stdout.write(f"  [{current.progress:3d}%] {current.message}")
                self.stdout.flush()

        run = services.run_traffic(run.pk, on_progress=show)
        if run.status != TrafficStatus.DONE:
            page = f"{settings.MODELPORT_BASE_URL.rstrip('/')}/deployments/{d.name}/"
            raise CommandError(f"Demo traffic failed: {run.message}\nSee {d.name}'s status and "
                               f"events: {page}")
        self.stdout.write(self.style.SUCCESS(run.message))
        self.stdout.write("Charts fill as rollups run (every 20 s); the drift alert rule is "
                          "evaluated every minute.")
