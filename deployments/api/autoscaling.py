"""The ``autoscaling`` object of the deployments API: one field that checks what a client sends
with ``deployments.spec.Autoscaling.parse`` (so the API, the portal and the CLI refuse the same
things with the same words), and the serializers that document it in the OpenAPI schema.

Two spellings of the target are taken: ``"metric": "concurrency", "target": 4`` (what reads
show) and the ``"target": {"type": "in_flight", "value": 4}`` object of the published contract
(``in_flight`` is ``concurrency``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.errors import InvalidInput

from .. import spec

# The contract's name for requests in flight (``API.md``); the model's is ``concurrency``.
TARGET_TYPES = {"in_flight": spec.ScaleMetric.CONCURRENCY.value,
                **{m: m for m in spec.SCALE_METRICS}}
_TARGET_DOC = "Requests in flight per replica (concurrency), req/s per replica (rps) or CPU %."


def _max_replicas() -> int:
    return settings.MODELPORT_MAX_REPLICAS


@extend_schema_field({"anyOf": [
    {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 100000},
    {"type": "object", "required": ["value"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": sorted(TARGET_TYPES)},
        "value": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 100000},
    }}]})
class _TargetField(serializers.Field):
    """Documentation only: a number, or ``{"type": ..., "value": ...}``."""


class AutoscalingInputSerializer(serializers.Serializer):
    """What a client sends (documentation: ``AutoscalingField`` does the checking)."""

    min_replicas = serializers.IntegerField(
        required=False, min_value=1, max_value=_max_replicas(),
        help_text="Fewest replicas while there is traffic (default 1).")
    max_replicas = serializers.IntegerField(
        required=False, min_value=1, max_value=_max_replicas(),
        help_text="Most replicas the scaler may run; required (unless the object is empty, "
                  "which like null means a fixed count).")
    metric = serializers.ChoiceField(
        choices=list(spec.SCALE_METRICS), required=False,
        help_text="What target counts (default concurrency): requests in flight, requests per "
                  "second, or CPU percent of a replica's cores.")
    target = _TargetField(required=False, help_text=(
        f"{_TARGET_DOC} A number (with metric), or {{type: in_flight|rps|cpu, value}}. "
        "Defaults: 4 in flight, 50 req/s, 70 % CPU (at most 100)."))
    scale_down_delay_s = serializers.IntegerField(
        required=False, min_value=0, max_value=86400,
        help_text="Scale down only to the most replicas wanted over this many seconds "
                  "(default 300).")
    idle_to_zero_after_s = serializers.IntegerField(
        required=False, allow_null=True, min_value=spec.MIN_IDLE_TO_ZERO_S,
        max_value=30 * 86400,
        help_text="No request for this long: run no replica (idle) until the next request "
                  "wakes it; null (default): never to zero.")


class AutoscalingSerializer(serializers.Serializer):
    """What reads show: ``Autoscaling.as_dict()``."""

    min_replicas = serializers.IntegerField()
    max_replicas = serializers.IntegerField()
    metric = serializers.ChoiceField(choices=list(spec.SCALE_METRICS))
    target = serializers.FloatField(help_text=_TARGET_DOC)
    scale_down_delay_s = serializers.IntegerField()
    idle_to_zero_after_s = serializers.IntegerField(allow_null=True)


def normalise(raw: Any) -> Any:
    """The contract's ``target: {type, value}`` as ``metric`` and ``target``; anything else as
    it came (``Autoscaling.parse`` names what is wrong)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("target"), dict):
        return raw
    target = raw["target"]
    unknown = sorted(set(target) - {"type", "value"})
    if unknown or "value" not in target:
        raise InvalidInput('autoscaling.target must be a number or {"type": "in_flight", '
                           '"value": 4} (type: in_flight, rps or cpu).', field="autoscaling")
    kind = target.get("type", raw.get("metric", spec.ScaleMetric.CONCURRENCY.value))
    if not isinstance(kind, str) or kind not in TARGET_TYPES:
        raise InvalidInput(f"autoscaling.target.type must be one of in_flight, rps, cpu "
                           f"(got {kind!r}).", field="autoscaling")
    metric = TARGET_TYPES[kind]
    if raw.get("metric", metric) != metric:
        raise InvalidInput(f"autoscaling.metric ({raw['metric']!r}) and target.type "
                           f"({kind!r}) disagree: give one.", field="autoscaling")
    return {**raw, "metric": metric, "target": target["value"]}


def parse(raw: Any) -> spec.Autoscaling | None:
    """``Autoscaling.parse`` after ``normalise``; ``InvalidInput`` naming ``autoscaling``."""
    return spec.Autoscaling.parse(normalise(raw))


@extend_schema_field(AutoscalingInputSerializer(allow_null=True))
class AutoscalingField(serializers.Field):
    """``autoscaling`` in a create or PATCH body: an object, or null (a fixed count). The
    validated value is an ``Autoscaling`` or None, checked before anything is written."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> spec.Autoscaling | None:
        try:
            return parse(data)
        except InvalidInput as exc:
            raise serializers.ValidationError(exc.message) from None

    def to_representation(self, value: Any) -> Any:
        return value.as_dict() if isinstance(value, spec.Autoscaling) else value
