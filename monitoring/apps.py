from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Give deployments' replicas their ingest token and URL, and revoke the tokens when a
        deployment stops, through ``deployments.hooks`` (deployments never imports monitoring);
        give the autoscaler the replicas' CPU load (``deployments.autoscale.register_cpu_load``);
        profile each succeeded batch job's input (``jobs.signals.job_finished``).
        Imported here, not at the top: this module loads before the models are ready."""
        from deployments import hooks  # noqa: PLC0415 - app registry

        from .ingest import ingest_environment, revoke_ingest_tokens  # noqa: PLC0415 - app registry

        hooks.register_replica_environment(ingest_environment)
        hooks.register_on_stop(revoke_ingest_tokens)
        # The scaler's CPU metric reads the replicas' samples monitoring keeps.
        from deployments import autoscale  # noqa: PLC0415 - app registry

        from .scale import cpu_load  # noqa: PLC0415 - app registry

        autoscale.register_cpu_load(cpu_load)
        # A succeeded batch job's input feeds the model's drift page (monitoring.batch).
        from jobs.signals import job_finished  # noqa: PLC0415 - app registry

        from .tasks import on_job_finished  # noqa: PLC0415 - app registry

        job_finished.connect(on_job_finished, dispatch_uid="monitoring.batch_drift")
