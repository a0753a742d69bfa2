"""Portal pages that change a deployment's spec: the Edit form on the deployment page and
"Deploy version N" from a version's page. Thin: the forms shape the input, the service verbs
(``services.update_deployment``, ``services.create_deployment`` — the API's PATCH and POST)
check roles and quotas, audit and start the rollout."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import DomainError
from registry.models import ModelVersion, RegisteredModel

from . import services
from .forms import AutoscalingForm, DeploymentEditForm, DeployVersionForm
from .models import Deployment, Revision
from .page import can_change, page_context, visible_deployment


@login_required
def deployment_edit(request: HttpRequest, name: str) -> HttpResponse:
    """The Edit form's POST (GET goes to the form on the deployment page). A refusal (a bad
    value, a 409 over quota) shows at the top of the form and next to its field."""
    d = visible_deployment(request, name)
    if request.method != "POST":
        return redirect(reverse("deployments:detail", args=[d.name]) + "#settings")
    form = DeploymentEditForm(request.POST, deployment=d)
    scaling = AutoscalingForm(request.POST, deployment=d)
    if all([form.is_valid(), scaling.is_valid()]):
        before = (d.revision, d.replicas, d.autoscaling)
        args = {**form.spec_args(), "autoscaling": scaling.spec()}
        if args["autoscaling"] is not None:
            del args["replicas"]  # the scaler's: the form's may be stale by now
        try:
            d = services.update_deployment(actor=request.user, deployment=d, **args)
        except DomainError as exc:
            if not can_change(request, d.team):  # no form on their page: say it on top
                messages.error(request, exc.message)
                return redirect("deployments:detail", name=d.name)
            if exc.field == "autoscaling":
                scaling.add_service_error(exc.message)
            else:
                form.add_service_error(exc.field, exc.message, exc.extra)
        else:
            if d.revision != before[0]:
                messages.success(request, f"Saved: revision {d.revision} of '{d.name}' is "
                                          f"rolling out ({d.strategy_type}).")
            elif (d.replicas, d.autoscaling) != before[1:]:
                messages.success(request, f"Saved: '{d.name}' now wants {d.replicas} "
                                          f"replica{'s' if d.replicas != 1 else ''} (autoscaling "
                                          f"{'on' if d.autoscaling else 'off'}); no new "
                                          "revision, nothing restarts.")
            else:
                messages.info(request, f"Nothing changed: '{d.name}' already runs this.")
            return redirect("deployments:detail", name=d.name)
    return render(request, "deployments/detail.html",
                  page_context(request, d, edit_form=form, scaling_form=scaling, full=True),
                  status=400)


def _version(request: HttpRequest, model_name: str, number: int) -> ModelVersion:
    model = RegisteredModel.objects.visible_to(request.user).filter(name=model_name).first()
    version = model.versions.filter(version=number).first() if model is not None else None
    if version is None:
        raise Http404(f"No version {number} of '{model_name}'.")
    return version


@login_required
def deploy_version(request: HttpRequest, model: str, number: int) -> HttpResponse:
    """"Deploy v2": each deployment of the model that the user may change, with a strategy
    to roll this version out there, and a new deployment prefilled with it."""
    version = _version(request, model, number)
    runs = Revision.objects.filter(deployment=OuterRef("pk"), number=OuterRef("revision")) \
        .values("model_version__version")[:1]
    deployments = (Deployment.objects.visible_to(request.user).filter(model=version.model)
                   .select_related("team", "model", "version")
                   .annotate(runs=Subquery(runs)).order_by("name"))
    rows = [{"d": d, "can_change": can_change(request, d.team), "runs": d.runs,
             "form": DeployVersionForm(deployment=d)} for d in deployments]
    return render(request, "deployments/deploy_version.html",
                  {"version": version, "model": version.model, "rows": rows})


@login_required
@require_POST
def deploy_version_to(request: HttpRequest, model: str, number: int,
                      name: str) -> HttpResponse:
    """Roll ``model`` v``number`` out to deployment ``name`` with the strategy chosen (a
    deployment that followed an alias is pinned to this version from now on)."""
    version = _version(request, model, number)
    d = visible_deployment(request, name)
    if d.model_id != version.model_id:
        raise Http404(f"'{d.name}' does not deploy '{model}'.")
    form = DeployVersionForm(request.POST, deployment=d)
    if form.is_valid():
        try:
            d = services.update_deployment(actor=request.user, deployment=d,
                                           version=version.version, alias=None,
                                           strategy=form.strategy_spec())
        except DomainError as exc:
            messages.error(request, f"{d.name}: {exc.message}")
        else:
            messages.success(request, f"Deploying {model} v{version.version} to '{d.name}': "
                                      f"revision {d.revision} is rolling out "
                                      f"({d.strategy_type}).")
            return redirect("deployments:detail", name=d.name)
    else:
        messages.error(request, f"{d.name}: " + "; ".join(
            f"{field}: {' '.join(str(e) for e in errors)}"
            for field, errors in form.errors.items()))
    return redirect("deployments:deploy-version", model=model, number=number)
