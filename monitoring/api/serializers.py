from __future__ import annotations

from typing import TYPE_CHECKING

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.rest import StrictTypes

from ..alerts import MAX_MIN_SAMPLES, METRICS, min_samples_of, verdict_text
from ..models import Alert, AlertRule, AlertState, Comparison, TaskType

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django_stubs_ext import StrPromise

    from deployments.models import Deployment


class RangeQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="ISO 8601; default end - 24 h.")
    end = serializers.DateTimeField(required=False, help_text="ISO 8601; default now.")
    revision = serializers.IntegerField(required=False, min_value=0,
                                        help_text="Only this deployment revision.")


@extend_schema_field({"type": "integer", "minimum": 60, "multipleOf": 60})
class StepField(serializers.IntegerField):
    """Seconds per point: whole minutes."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value % 60:
            raise serializers.ValidationError("A whole number of minutes, in seconds (60, "
                                              "300, …).")
        return value


class MetricsQuerySerializer(RangeQuerySerializer):
    step = StepField(required=False, min_value=60,
                     help_text="Seconds per point, a multiple of 60; default gives at most 240 "
                               "points.")


class PredictionsSeriesSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["classes", "numeric", "none"])
    classes = serializers.DictField(child=serializers.ListField(child=serializers.FloatField()),
                                    required=False, help_text="Count per class per step.")
    mean = serializers.ListField(child=serializers.FloatField(allow_null=True), required=False)
    histogram = serializers.DictField(required=False,
                                      help_text="{edges, counts} of numeric predictions.")


def _series(help_text: str) -> serializers.ListField:
    return serializers.ListField(child=serializers.FloatField(allow_null=True),
                                 help_text=help_text)


class SampledReplicaSerializer(serializers.Serializer):
    replica = serializers.CharField(help_text="The replica's id in its runtime (container name).")
    revision = serializers.IntegerField()
    index = serializers.IntegerField()
    memory_limit_mb = serializers.FloatField(allow_null=True)
    last_seen = serializers.DateTimeField()


def _per_replica(help_text: str) -> serializers.DictField:
    return serializers.DictField(child=serializers.ListField(
        child=serializers.FloatField(allow_null=True)), help_text=help_text)


class MarkerSerializer(serializers.Serializer):
    revision = serializers.IntegerField()
    at = serializers.DateTimeField(help_text="When the revision was made.")
    kind = serializers.ChoiceField(choices=["deploy", "rollback", "promote"])
    # A declared field, collected by the metaclass; the stubs see Field.label.
    label = serializers.CharField(  # type: ignore[assignment]
        help_text="e.g. 'r3 (v2) · rollback to revision 1'.")


class SplitRevisionSerializer(serializers.Serializer):
    revision = serializers.IntegerField()
    percent = serializers.FloatField(allow_null=True, help_text="Its share of the traffic now.")
    latency_p95 = _series("This revision's p95 latency (ms) per step.")
    error_rate = _series("This revision's error rate (%) per step.")


class MetricsSerializer(serializers.Serializer):
    deployment = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    step = serializers.IntegerField()
    timestamps = serializers.ListField(child=serializers.DateTimeField())
    requests = _series("Requests per step.")
    requests_per_min = _series("Average requests per minute in each step.")
    # A declared field, collected by the metaclass; the stubs see Serializer.errors.
    errors = _series("Responses with status ≥ 400 per step.")  # type: ignore[assignment]
    error_rate = _series("Errors as a percentage of requests.")
    latency_mean = _series("Mean latency (ms).")
    latency_p50 = _series("Median latency (ms), from the fixed-bucket histogram.")
    latency_p95 = _series("p95 latency (ms).")
    latency_p99 = _series("p99 latency (ms).")
    predictions = PredictionsSeriesSerializer()
    quality = serializers.DictField(help_text="Ground-truth quality per step: accuracy and f1 "
                                              "(classification) or mae and rmse (regression).")
    replicas = SampledReplicaSerializer(many=True, help_text="Replicas sampled in the range.")
    replica_cpu = _per_replica("Per replica id: mean CPU % per step (100 = one core).")
    replica_memory = _per_replica("Per replica id: peak memory (MB) per step.")
    gateway_requests = _series("Requests of admitted callers the gateway answered per step, "
                               "whatever the outcome (its own failures included).")
    gateway_errors = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="Per status code (500, 502, 503, 504): requests the gateway answered with its "
                  "own failure per step — 503 no ready replica, 502 replicas unreachable, 504 "
                  "timed out, 500 a gateway bug. No replica saw them: they are not in "
                  "requests/errors.")
    gateway_error_rate = _series("Gateway failures as a percentage of gateway_requests.")
    markers = MarkerSerializer(many=True, help_text="Revisions made in the range (deploys, "
                                                    "rollbacks, promotions), oldest first.")
    split = SplitRevisionSerializer(
        many=True, help_text="While traffic is split between revisions (canary, blue/green) "
                             "and no revision was asked for: each one's own p95 latency and "
                             "error rate. Empty otherwise.")
    totals = serializers.DictField(
        help_text="Over the range: requests, errors, error_rate, latency_p50/p95/p99, "
                  "gateway_requests, gateway_errors, gateway_error_rate, gateway_errors_by_code.")


class FeatureDriftSerializer(serializers.Serializer):
    feature = serializers.CharField()
    kind = serializers.ChoiceField(choices=["numeric", "categorical"])
    test = serializers.ChoiceField(choices=["ks", "chi2"])
    statistic = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    psi = serializers.FloatField()
    js = serializers.FloatField(help_text="Jensen-Shannon distance (base 2) on the PSI bins.")
    n = serializers.IntegerField(help_text="Rows of live input behind the figures.")
    reference_sample = serializers.ChoiceField(
        choices=["stored", "deciles", "none"], required=False,
        help_text="Numeric features: what KS compared with — the baseline's stored random "
                  "sample, or one rebuilt from its deciles (baselines without a sample).")
    tests = serializers.DictField(child=serializers.BooleanField(),
                                  help_text="Each test's own vote (ks or chi2, psi, js).")
    rule = serializers.CharField(help_text="The rule of the feature's kind, e.g. 'ks and psi'.")
    drifted = serializers.BooleanField()
    decided_by = serializers.ListField(
        child=serializers.CharField(),
        help_text="The tests of the rule that decided the verdict.")


class DriftSerializer(serializers.Serializer):
    deployment = serializers.CharField()
    revision = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    rows = serializers.IntegerField()
    reference = serializers.DictField()
    thresholds = serializers.DictField(child=serializers.FloatField())
    rules = serializers.DictField(child=serializers.CharField(),
                                  help_text="Which tests decide, per feature kind.")
    features = FeatureDriftSerializer(many=True)
    drifted = serializers.ListField(child=serializers.CharField())


class BatchJobDriftSerializer(serializers.Serializer):
    """One succeeded batch job's input against its version's reference."""

    kind = serializers.CharField(help_text='Always "batch": a job\'s input, not live traffic.')
    job = serializers.IntegerField()
    status = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    trigger = serializers.CharField()
    model_version = serializers.IntegerField()
    alias = serializers.CharField(allow_null=True)
    rows = serializers.IntegerField(help_text="The job's input rows.")
    profiled_rows = serializers.IntegerField(help_text="The rows read to profile it.")
    reference = serializers.DictField()
    thresholds = serializers.DictField(child=serializers.FloatField())
    rules = serializers.DictField(child=serializers.CharField())
    features = FeatureDriftSerializer(many=True)
    drifted = serializers.ListField(child=serializers.CharField())
    message = serializers.CharField(allow_blank=True)
    recorded_at = serializers.DateTimeField()


class BatchDriftSerializer(serializers.Serializer):
    model = serializers.CharField()
    results = BatchJobDriftSerializer(many=True)


@extend_schema_field({"anyOf": [{"type": t} for t in
                                ("string", "number", "boolean", "array", "object")],
                      "description": "The true label or value (any JSON but null)."})
class _LabelField(serializers.JSONField):
    pass


class FeedbackItemSerializer(StrictTypes, serializers.Serializer):
    request_id = serializers.CharField(max_length=100)
    label = _LabelField()  # type: ignore[assignment]  # a declared field, not Field.label


class FeedbackResultSerializer(serializers.Serializer):
    matched = serializers.IntegerField()
    updated = serializers.IntegerField()
    unmatched = serializers.ListField(child=serializers.CharField(),
                                      help_text="Request ids with no logged prediction.")


@extend_schema_field({"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True})
class _RevisionField(serializers.CharField):
    pass


class IngestBatchSerializer(serializers.Serializer):
    deployment = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                       help_text="Default (or blank, or null): the ingest "
                                                 "token's deployment.")
    revision = _RevisionField(required=False, allow_null=True, allow_blank=True,
                              help_text='The replica\'s revision: its digits count ("r3" is 3).')
    replica = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                    trim_whitespace=False)
    records = serializers.ListField(
        child=serializers.JSONField(), max_length=None,
        help_text="Prediction records, each an object: `request_id` (1-100 characters), "
                  "`timestamp` (ISO 8601), and optionally `latency_ms` (≥ 0, default 0), "
                  "`status` (100-599, default 200), `endpoint`, `inputs`, `outputs` (JSON) "
                  "and `error` (a string or null). Records are checked one by one: one that "
                  "cannot be stored is dropped and reported in `rejections`, the others are "
                  "stored.")


class IngestRejectionSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the record in 'records'.")
    reason = serializers.CharField(help_text="not_an_object, request_id, timestamp, latency_ms, "
                                             "status, endpoint, error, too_deep or unstorable")
    detail = serializers.CharField()


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Records stored.")
    sampled_out = serializers.IntegerField()
    rejected = serializers.IntegerField(
        help_text="Records dropped one by one because they could not be stored; the rest of "
                  "the batch is stored regardless.")
    rejections = IngestRejectionSerializer(many=True, help_text="The first 20 rejected records.")
    sampling_rate = serializers.FloatField(
        help_text="The deployment's sampling rate: replicas keep only the requests it keeps "
                  "(the same hash of the request id) and do no logging work for the others.")


class AlertRuleSerializer(serializers.ModelSerializer):
    deployment: serializers.SlugRelatedField[Deployment] = serializers.SlugRelatedField(
        slug_field="name", read_only=True)
    firing = serializers.SerializerMethodField()
    # As stored: checked on the way in (http/https, see WEBHOOK_URL), not RFC 3986 URIs or
    # RFC 5322 addresses as the model fields' formats would claim.
    webhook_url = serializers.CharField(read_only=True)
    retrain_webhook_url = serializers.CharField(read_only=True)
    job_schedule = serializers.IntegerField(
        source="job_schedule_id", read_only=True, allow_null=True,
        help_text="Retraining hook: the job schedule started when an alert opens, or null.")
    emails = serializers.ListField(child=serializers.CharField(), read_only=True)
    min_samples_effective = serializers.SerializerMethodField(
        help_text="The minimum in force: min_samples, else the metric's default (100 for "
                  "drift, 50 for quality, 0 for traffic metrics).")
    silenced_by: serializers.SlugRelatedField[AbstractBaseUser] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True,
        help_text="Who silenced it; null when not silenced.")
    last_evaluation = serializers.SerializerMethodField(
        help_text="The last evaluation in words, e.g. 'not enough data (3 of 100)'.")

    class Meta:
        model = AlertRule
        fields = ["id", "deployment", "name", "metric", "comparison", "threshold",
                  "window_minutes", "enabled", "webhook_url", "emails", "retrain_webhook_url",
                  "job_schedule", "min_samples", "min_samples_effective", "silenced_until",
                  "silenced_by", "firing", "last_evaluated_at", "last_value", "last_samples",
                  "last_verdict", "last_evaluation", "created_at"]

    def get_firing(self, rule: AlertRule) -> bool:
        return any(a.state == "firing" for a in rule.alerts.all())

    def get_min_samples_effective(self, rule: AlertRule) -> int:
        return min_samples_of(rule)

    def get_last_evaluation(self, rule: AlertRule) -> str:
        return verdict_text(rule)


_REFUSED = (" http(s) only, at most 500 characters. A host that is or resolves to a loopback, "
            "private, link-local, metadata or otherwise internal address is refused (400, and "
            "again at each delivery) unless a platform admin allow-lists it.")
WEBHOOK_HELP = 'Slack-compatible: receives {"text": …}.' + _REFUSED
JOB_SCHEDULE_HELP = ("Retraining hook: the id of a job schedule of the deployment's team "
                     "(GET /api/v1/job-schedules/); one job of it starts when an alert of the "
                     "rule opens.")
RETRAIN_HELP = "Called with the alert as JSON when the rule fires." + _REFUSED
# http(s), a host (no userinfo; an IPv6 literal in brackets) and anything after it but spaces
# and control characters: what the alert sender can call (core.netguard then says whether it
# may). Blank: none. Explicit classes, not \s or \S:
# Python's and ECMA's differ, and the schema's pattern must mean what the server checks.
WEBHOOK_URL = (r"^(?:[Hh][Tt][Tt][Pp][Ss]?://(?:[^\x00-\x20\x7f-\x9f/?#\[\]@]+"
               r"|\[[0-9A-Fa-f:.]+\](?::[0-9]+)?)"
               r"(?:[/?#][^\x00-\x20\x7f-\x9f]*)?)?\Z")


def _url(help_text: str, **kwargs) -> serializers.RegexField:
    return serializers.RegexField(WEBHOOK_URL, max_length=500, allow_blank=True,
                                  trim_whitespace=False, required=False, help_text=help_text,
                                  error_messages={"invalid": "Use an http:// or https:// URL."},
                                  **kwargs)


_METRIC_HELP = "One of: " + ", ".join(f"{k} ({v})" for k, v in METRICS.items())
_METRIC_ERRORS: dict[str, str | StrPromise] = {
    "invalid_choice": "Unknown metric '{input}'; use one of " + ", ".join(sorted(METRICS)) + "."}


_MIN_SAMPLES_HELP = ("Rows the window needs before the rule may fire (input rows for drift, "
                     "labelled predictions for quality, requests otherwise); below it the "
                     "evaluation is 'not enough data'. Omitted: the metric's default (100 "
                     "drift, 50 quality, 0 traffic).")


class AlertRuleCreateSerializer(StrictTypes, serializers.Serializer):
    deployment = serializers.CharField(max_length=50, help_text="Deployment name.")
    name = serializers.CharField(max_length=100)
    metric = serializers.ChoiceField(choices=list(METRICS), help_text=_METRIC_HELP,
                                     error_messages=_METRIC_ERRORS)
    comparison = serializers.ChoiceField(choices=Comparison.choices, default=">")
    threshold = serializers.FloatField()
    window_minutes = serializers.IntegerField(default=5, min_value=1, max_value=10080)
    enabled = serializers.BooleanField(default=True)
    webhook_url = _url(WEBHOOK_HELP, default="")
    emails = serializers.ListField(child=serializers.EmailField(), required=False, default=list)
    retrain_webhook_url = _url(RETRAIN_HELP, default="")
    job_schedule = serializers.IntegerField(required=False, allow_null=True, default=None,
                                            help_text=JOB_SCHEDULE_HELP)
    min_samples = serializers.IntegerField(
        min_value=0, max_value=MAX_MIN_SAMPLES, required=False, allow_null=True, default=None,
        help_text=_MIN_SAMPLES_HELP)


class AlertRuleUpdateSerializer(StrictTypes, serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    metric = serializers.ChoiceField(choices=list(METRICS), required=False,
                                     help_text=_METRIC_HELP, error_messages=_METRIC_ERRORS)
    comparison = serializers.ChoiceField(choices=Comparison.choices, required=False)
    threshold = serializers.FloatField(required=False)
    window_minutes = serializers.IntegerField(min_value=1, max_value=10080, required=False)
    enabled = serializers.BooleanField(required=False)
    webhook_url = _url(WEBHOOK_HELP)
    emails = serializers.ListField(child=serializers.EmailField(), required=False)
    retrain_webhook_url = _url(RETRAIN_HELP)
    job_schedule = serializers.IntegerField(required=False, allow_null=True,
                                            help_text=JOB_SCHEDULE_HELP + " null: none.")
    min_samples = serializers.IntegerField(min_value=0, max_value=MAX_MIN_SAMPLES,
                                           required=False, allow_null=True,
                                           help_text=_MIN_SAMPLES_HELP + " null: back to it.")


class SilenceSerializer(StrictTypes, serializers.Serializer):
    until = serializers.DateTimeField(
        allow_null=True, help_text="No notifications from the rule until then (at most 30 days "
                                   "ahead, with a time zone); null lifts the silence.")


class AlertRuleQuerySerializer(serializers.Serializer):
    deployment = serializers.CharField(required=False, max_length=50,
                                       help_text="Only this deployment's rules.")


class AlertQuerySerializer(serializers.Serializer):
    deployment = serializers.CharField(required=False, max_length=50,
                                       help_text="Only this deployment's alerts.")
    state = serializers.ChoiceField(choices=AlertState.values, required=False)


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.IntegerField(source="rule.id", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    deployment = serializers.CharField(source="rule.deployment.name", read_only=True)
    metric = serializers.CharField(source="rule.metric", read_only=True)
    acknowledged_by: serializers.SlugRelatedField[AbstractBaseUser] = \
        serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                     help_text="Who acknowledged it; null until someone does.")

    class Meta:
        model = Alert
        fields = ["id", "rule", "rule_name", "deployment", "metric", "state", "value",
                  "message", "started_at", "resolved_at", "acknowledged_at",
                  "acknowledged_by", "notified"]
        extra_kwargs = {"notified": {"help_text": (
            "Per event (firing, resolved) and channel (webhook, retrain, email): 'HTTP <status>', "
            "'refused: <reason>' (an internal destination), 'failed (attempt n): <what>' or "
            "'sent n message(s)'. Never the destination's answer.")}}


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True,
                      "maximum": 10, "exclusiveMaximum": True})
class _PsiField(serializers.FloatField):
    pass


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True,
                      "maximum": 1, "exclusiveMaximum": True})
class _PValueField(serializers.FloatField):
    pass


class ModelMonitoringSerializer(StrictTypes, serializers.Serializer):
    psi_threshold = _PsiField(required=False, help_text="Between 0 and 10, exclusive.")
    p_value_threshold = _PValueField(required=False, help_text="Between 0 and 1, exclusive.")
    task = serializers.ChoiceField(choices=TaskType.choices, required=False)


class DeploymentMonitoringSerializer(StrictTypes, serializers.Serializer):
    sampling_rate = serializers.FloatField(min_value=0, max_value=1)
