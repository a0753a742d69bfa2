"""Consumer keys on the monitoring side: the deployment's monitoring page shows requests and
429s per key over the chosen range, and the beat's prune drops old per-key seconds with the raw
traffic samples."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from deployments.models import ConsumerTraffic
from monitoring import rollups
from tests.factories import make_consumer_key

pytestmark = pytest.mark.django_db


def test_monitoring_page_shows_limited_per_key(deployment, team, viewer):
    now = timezone.now()
    key, _ = make_consumer_key(team, [deployment], name="search-api", rate_per_s=1, burst=1)
    ConsumerTraffic.objects.create(key=key, deployment=deployment,
                                   at=now - timedelta(minutes=10), requests=40, limited=9)
    ConsumerTraffic.objects.create(key=key, deployment=deployment,
                                   at=now - timedelta(hours=3), requests=500, limited=1)
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/monitoring/deployments/{deployment.name}/?range=1h").content.decode()
    panel = page.split('id="callers"')[1].split("</article>")[0]
    assert "search-api" in panel and "<td>40 <meter" in panel and "<strong>9</strong>" in panel
    page = client.get(f"/monitoring/deployments/{deployment.name}/?range=6h").content.decode()
    panel = page.split('id="callers"')[1].split("</article>")[0]
    assert "<td>540 <meter" in panel and "<strong>10</strong>" in panel


def test_prune_drops_old_consumer_traffic(deployment, team, settings):
    settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS = 1
    now = timezone.now()
    key, _ = make_consumer_key(team, [deployment])
    ConsumerTraffic.objects.create(key=key, deployment=deployment, at=now - timedelta(days=2),
                                   requests=5)
    ConsumerTraffic.objects.create(key=key, deployment=deployment, at=now - timedelta(hours=2),
                                   requests=7)
    assert rollups.prune(now=now)["consumer_traffic"] == 1
    assert list(ConsumerTraffic.objects.values_list("requests", flat=True)) == [7]
