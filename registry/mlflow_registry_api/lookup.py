"""What every handler of the registry API shares: finding the caller's model or version,
reading MLflow's parameters, paging searches, and saying Modelport's refusals in MLflow's
error format (so ``MlflowClient`` raises them as ``MlflowException`` with the message as is)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db.models import QuerySet

from core.errors import Conflict, DomainError, NotFound, PermissionDenied

from .. import mlflow_teams
from ..mlflow_calls import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    Caller,
    Refusal,
    denied,
    invalid,
    missing,
)
from ..models import ModelVersion, RegisteredModel

# MLflow's own defaults and ceilings: (default, most) for models, and for versions.
MODEL_RESULTS, VERSION_RESULTS = (100, 1000), (10000, 200_000)
MAX_NUMBER = 2**31 - 1  # ModelVersion.version: a PostgreSQL integer


@contextmanager
def mlflow_errors() -> Iterator[None]:
    """A service's refusal (``DomainError``) as MLflow's error, same words."""
    try:
        yield
    except NotFound as exc:
        raise missing(exc.message) from None
    except PermissionDenied as exc:
        raise denied(exc.message) from None
    except Conflict as exc:
        code = RESOURCE_ALREADY_EXISTS if exc.code == "name_taken" else INVALID_PARAMETER_VALUE
        raise Refusal(400, code, exc.message) from None
    except DomainError as exc:
        raise invalid(exc.message) from None


def text(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if isinstance(value, list):  # a GET's query string
        value = value[0] if len(value) == 1 else None
    if value is None or value == "":
        if required:
            raise invalid(f"Missing value for required parameter '{name}'.")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise invalid(f"Parameter '{name}' must be a string.")
    return str(value)


def strings(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name) or []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"Parameter '{name}' must be a list of strings.")
    return value


def pairs(params: dict[str, Any]) -> dict[str, str]:
    """``tags: [{"key", "value"}]`` as a dict (MLflow's create calls)."""
    found: dict[str, str] = {}
    for tag in params.get("tags") or []:
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            raise invalid("tags must be a list of {\"key\", \"value\"} objects.")
        found[tag["key"]] = str(tag.get("value") or "")
    return found


def version_number(number: str) -> int:
    """A version number as MLflow sends it: ASCII digits within the database's integer
    (``str.isdigit`` also takes '²', which ``int`` refuses, and an overflowing number fails in
    PostgreSQL — each was a 500)."""
    if not (number.isascii() and number.isdigit()) or int(number) > MAX_NUMBER:
        raise invalid(f"Parameter 'version' must be a version number, got {number!r}.")
    return int(number)


def _max_results(params: dict[str, Any], limits: tuple[int, int]) -> int:
    raw = text(params, "max_results", required=False) or str(limits[0])
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= limits[1]:
        raise invalid(f"max_results must be a number from 1 to {limits[1]}, got {raw!r}.")
    return int(raw)


def model(caller: Caller, name: str, *, write: bool = False) -> RegisteredModel:
    """The model ``name`` if the caller may see it; else 404 as if it did not exist — but for
    a write, which says whose model it is (``create`` answers RESOURCE_ALREADY_EXISTS anyway,
    and a training script's author needs to know why their version was refused)."""
    found = RegisteredModel.objects.select_related("team").filter(name=name).first()
    if found is not None and RegisteredModel.objects.visible_to(caller.user).filter(
            pk=found.pk).exists():
        return found
    if found is not None and write:
        raise denied(mlflow_teams.refusal(caller.user, mlflow_teams.Target(
            name=name, model=found, team=found.team)))
    raise missing(f"Registered Model with name={name} not found")


def version(caller: Caller, name: str, number: str, *, write: bool = False) -> ModelVersion:
    found = (ModelVersion.objects.select_related("model__team")
             .filter(model=model(caller, name, write=write),
                     version=version_number(number)).first())
    if found is None:
        raise missing(f"Model Version (name={name}, version={number}) not found")
    return found


def page(items: list, params: dict[str, Any], search: Callable[[list, str, list[str]], list],
         limits: tuple[int, int] = MODEL_RESULTS) -> tuple[list, str]:
    """MLflow's filter, order_by, max_results and page_token over ``items`` (entities):
    ``search`` filters and sorts them with MLflow's own search utilities."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - lazy: mlflow
    from mlflow.utils.search_utils import SearchUtils  # noqa: PLC0415 - lazy: mlflow

    limit = _max_results(params, limits)
    try:
        found = search(items, text(params, "filter", required=False),
                       strings(params, "order_by"))
        start = SearchUtils.parse_start_offset_from_page_token(
            text(params, "page_token", required=False) or None)
    except MlflowException as exc:
        raise invalid(exc.message) from None
    except (TypeError, ValueError) as exc:  # a comparison MLflow's parser let through
        raise invalid(f"Cannot apply this filter or order_by: {exc}.") from None
    end = start + limit
    token = SearchUtils.create_page_token(end) if end < len(found) else b""
    if isinstance(token, bytes):
        token = token.decode()
    return found[start:end], token


def _like(pattern: str) -> str:
    """SQL LIKE (``%``, ``_``) as an anchored regular expression."""
    return "^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                         for c in pattern) + "$"


def narrowed(queryset: QuerySet, filter_string: str, *, name_field: str,
             run_field: str = "") -> QuerySet:
    """The rows ``filter_string`` can match, found by the database: its clauses on the name
    (``=``, ``LIKE``, ``ILIKE``) and the run id (``=``, ``IN``). A superset — MLflow's own filter
    then decides exactly — so a search never loads the whole catalogue for one model's name."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - lazy: mlflow
    from mlflow.utils.search_utils import SearchModelVersionUtils  # noqa: PLC0415 - lazy

    if not filter_string:
        return queryset
    try:
        clauses = SearchModelVersionUtils.parse_search_filter(filter_string)
    except MlflowException:
        return queryset  # MLflow's own filter says what is wrong with it
    for clause in clauses:
        key, comparator, value = clause["key"], clause["comparator"], clause["value"]
        if clause["type"] != "attribute":
            continue
        if key == "name" and comparator == "=":
            queryset = queryset.filter(**{name_field: value})
        elif key == "name" and comparator in ("LIKE", "ILIKE"):
            lookup = "regex" if comparator == "LIKE" else "iregex"
            queryset = queryset.filter(**{f"{name_field}__{lookup}": _like(value)})
        elif key == "run_id" and run_field and comparator == "=":
            queryset = queryset.filter(**{run_field: value})
        elif key == "run_id" and run_field and comparator == "IN":
            queryset = queryset.filter(**{f"{run_field}__in": list(value)})
    return queryset


_ORDER = re.compile(r"^\s*(?P<key>\w+)\s*(?P<way>ASC|DESC)?\s*$", re.IGNORECASE)
PROMPT_CLAUSE = {"type": "tag", "key": "mlflow.prompt.is_prompt", "comparator": "!=",
                 "value": "true"}  # MlflowClient adds it to every model search; no prompts here


def sql_order(filter_string: str, order_by: list[str], columns: dict[str, str], *,
              versions: bool = False) -> list[str] | None:
    """The database ordering for a search the database can answer alone — a filter only on
    the name (``=``, ``LIKE``, ``ILIKE``: ``narrowed`` applies them exactly), order_by only on
    ``columns`` — so a page of a large catalogue costs a page; else None (MLflow's in-memory
    filter and sort decide, over ``narrowed`` rows)."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - lazy: mlflow
    from mlflow.utils.search_utils import (  # noqa: PLC0415 - lazy: mlflow
        SearchModelUtils,
        SearchModelVersionUtils,
    )

    parser = SearchModelVersionUtils if versions else SearchModelUtils
    try:
        clauses = parser.parse_search_filter(filter_string) if filter_string else []
    except MlflowException:
        return None
    for clause in clauses:
        pushed = clause["type"] == "attribute" and (
            (clause["key"] == "name" and clause["comparator"] in ("=", "LIKE", "ILIKE"))
            or (versions and clause["key"] == "run_id" and clause["comparator"] in ("=", "IN")))
        if not pushed and clause != PROMPT_CLAUSE:
            return None
    default = ["last_updated_timestamp DESC", "name ASC", "version_number DESC"] if versions \
        else ["name ASC"]
    ordering: list[str] = []
    for item in order_by or default:
        found = _ORDER.match(item)
        if found is None or found["key"] not in columns:
            return None
        descending = (found["way"] or "ASC").upper() == "DESC"
        ordering.append(("-" if descending else "") + columns[found["key"]])
    return [*ordering, columns["name"], "pk"]


def sql_page(queryset: QuerySet, params: dict[str, Any],
             limits: tuple[int, int] = MODEL_RESULTS) -> tuple[list[int], str]:
    """The primary keys of one page of ``queryset`` (ordered) and the next page's token."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - lazy: mlflow
    from mlflow.utils.search_utils import SearchUtils  # noqa: PLC0415 - lazy: mlflow

    limit = _max_results(params, limits)
    try:
        start = SearchUtils.parse_start_offset_from_page_token(
            text(params, "page_token", required=False) or None)
    except MlflowException as exc:
        raise invalid(exc.message) from None
    keys = list(queryset.values_list("pk", flat=True)[start:start + limit + 1])
    token: str | bytes = SearchUtils.create_page_token(start + limit) if len(keys) > limit \
        else ""
    return keys[:limit], token.decode() if isinstance(token, bytes) else token
