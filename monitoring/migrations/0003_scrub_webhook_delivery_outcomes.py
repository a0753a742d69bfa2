"""Webhook outcomes recorded before destinations were checked kept the HTTP client's error text
(connection refused, timed out, reason phrases, the URL), which told a rule's author what
listens where. Keep the status code, or the attempt count with the details removed."""

import re

from django.db import migrations

_KEPT = re.compile(r"^HTTP \d{3}$")
_FAILED = re.compile(r"^failed \(attempt (\d+)\)")
WEBHOOK_CHANNELS = ("webhook", "retrain")


def scrubbed(text: object) -> object:
    if not isinstance(text, str) or _KEPT.match(text):
        return text
    failed = _FAILED.match(text)
    return (f"failed (attempt {failed.group(1)}): details removed" if failed
            else "details removed")


def scrub_outcomes(apps, schema_editor) -> None:
    Alert = apps.get_model("monitoring", "Alert")
    changed = []
    for alert in Alert.objects.exclude(notified={}).only("id", "notified").iterator(
            chunk_size=500):
        notified = alert.notified if isinstance(alert.notified, dict) else {}
        new = {event: ({channel: scrubbed(text) if channel in WEBHOOK_CHANNELS else text
                        for channel, text in outcomes.items()}
                       if isinstance(outcomes, dict) else outcomes)
               for event, outcomes in notified.items()}
        if new != notified:
            alert.notified = new
            changed.append(alert)
    Alert.objects.bulk_update(changed, ["notified"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_replica_stats")]

    operations = [migrations.RunPython(scrub_outcomes, migrations.RunPython.noop)]
