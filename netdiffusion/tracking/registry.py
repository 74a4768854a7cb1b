"""Model registry promotion with aliases: ``challenger`` for every candidate, ``champion`` only if better.

A candidate version replaces the champion when its model knows every class the champion knows,
its run's validation was clean and, on every
configured metric, it is at least as good as the champion and strictly better on at least one.
The metrics are the evaluation report keys as logged by :func:`netdiffusion.tracking.runs.log_refresh`
(``similarity.overall.jsd``...); a ``*`` pattern averages every matching metric, so
``utility.train_synthetic_test_real.*.*.accuracy`` is TSTR accuracy over tasks and classifiers.
The decision and its numbers are written to the candidate's run (``promotion/*.json``, tags) and
to the model version's tags, so "why is v7 champion?" has an answer later.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netdiffusion.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

# metric (report.json key, * = mean over matches) -> "min" (lower is better) or "max"
DEFAULT_METRICS: dict[str, str] = {
    "similarity.overall.jsd": "min",
    "utility.train_synthetic_test_real.*.*.accuracy": "max",
}


def parse_metric_specs(specs: list[str] | None) -> dict[str, str]:
    """``["similarity.overall.jsd:min", "x:max"]`` -> dict; empty -> :data:`DEFAULT_METRICS`."""
    if not specs:
        return dict(DEFAULT_METRICS)
    out: dict[str, str] = {}
    for spec in specs:
        name, _, goal = spec.rpartition(":")
        if not name or goal not in ("min", "max"):
            raise ValueError(f"metric spec {spec!r}: expected NAME:min or NAME:max")
        out[name] = goal
    return out


def _matches(metrics: Mapping[str, float], pattern: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if fnmatch.fnmatchcase(k, pattern) and math.isfinite(float(v))}


def metric_value(metrics: Mapping[str, float], pattern: str, keys: set[str] | None = None) -> float | None:
    """The value of ``pattern`` in a run's metrics: exact key, or the mean over ``*`` matches (only
    over ``keys`` when given)."""
    if "*" not in pattern and "?" not in pattern:
        value = metrics.get(pattern)
        return float(value) if value is not None and math.isfinite(float(value)) else None
    values = [v for k, v in _matches(metrics, pattern).items() if keys is None or k in keys]
    return sum(values) / len(values) if values else None


def compare(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
            metrics: Mapping[str, str]) -> tuple[bool, str, dict[str, dict[str, Any]]]:
    """Is ``candidate`` better than ``champion``? Returns ``(better, reason, per-metric numbers)``."""
    table: dict[str, dict[str, Any]] = {}
    worse, better, missing = [], [], []
    for name, goal in metrics.items():
        # a pattern is averaged over the keys both runs have: a champion evaluated with one
        # classifier (or without macro tasks) against a candidate with three would compare means
        # over different things
        shared = set(_matches(candidate, name)) & set(_matches(champion or {}, name)) or None
        cand = metric_value(candidate, name, shared)
        champ = metric_value(champion, name, shared) if champion is not None else None
        row: dict[str, Any] = {"goal": goal, "candidate": cand, "champion": champ}
        if shared and ("*" in name or "?" in name):
            row["keys_compared"] = len(shared)
        if cand is None:
            missing.append(name)
            row["verdict"] = "missing"
        elif champ is None:
            row["verdict"] = "no champion value"
        elif (cand < champ) if goal == "min" else (cand > champ):
            better.append(name)
            row["verdict"] = "better"
        elif cand == champ:
            row["verdict"] = "equal"
        else:
            worse.append(name)
            row["verdict"] = "worse"
        table[name] = row
    if missing:
        return False, "candidate lacks metric(s) " + ", ".join(missing), table
    if champion is None:
        return True, "no current champion", table
    if worse:
        return False, "worse on " + ", ".join(worse), table
    if not better and any(r["verdict"] == "equal" for r in table.values()):
        return False, "not better on any metric (equal)", table
    if not better:  # champion lacks every metric: nothing to compare against, take the measured one
        return True, "champion has none of the metrics", table
    return True, "better on " + ", ".join(better), table


def resolve_version(client: Any, name: str, version: str | int | None = None, run_id: str | None = None) -> Any:
    """The model version to promote: given, the newest one logged by ``run_id``, or the newest."""
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        query = f"name='{name}'" + (f" and run_id='{run_id}'" if run_id else "")
        versions = client.search_model_versions(query)
    except MlflowException as exc:
        raise LookupError(f"model {name!r}: {exc.message}") from exc
    if not versions:
        raise LookupError(f"model {name!r}: no version" + (f" from run {run_id}" if run_id else ""))
    return max(versions, key=lambda v: int(v.version))


def champion_version(client: Any, name: str) -> Any | None:
    """The version holding the ``champion`` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def promote(name: str, version: str | int | None = None, run_id: str | None = None, *,
            metrics: Mapping[str, str] | None = None, require_clean_validation: bool = True,
            settings: TrackingSettings | None = None) -> dict[str, Any]:
    """Set ``challenger`` on the candidate version; move ``champion`` to it if it is better (see module).

    Returns the decision: ``promoted``, ``reason``, ``version``, ``champion_before``/``champion_after``,
    ``validation_clean`` and the per-metric ``metrics`` table."""
    import mlflow

    from netdiffusion.tracking.runs import TAG_VALIDATION_CLEAN, configure

    configure(settings)
    client = mlflow.MlflowClient()
    metrics = dict(metrics or DEFAULT_METRICS)
    candidate = resolve_version(client, name, version, run_id)
    cand_run = client.get_run(candidate.run_id) if candidate.run_id else None
    cand_metrics = dict(cand_run.data.metrics) if cand_run else {}
    clean = bool(cand_run) and cand_run.data.tags.get(TAG_VALIDATION_CLEAN) == "true"

    client.set_registered_model_alias(name, CHALLENGER, candidate.version)
    current = champion_version(client, name)
    champ_metrics: dict[str, float] | None = None
    champ_run = client.get_run(current.run_id) if current is not None and current.run_id else None
    if champ_run is not None:
        champ_metrics = dict(champ_run.data.metrics)
    elif current is not None:
        champ_metrics = {}
    # a model that cannot generate every class the champion can must not replace it: the service
    # and scheduled runs would lose those classes (and its metrics cover other classes anyway)
    lost = sorted(_classes(champ_run) - _classes(cand_run)) if _classes(cand_run) else []

    if current is not None and str(current.version) == str(candidate.version):
        promoted, reason, table = False, "already champion", compare(cand_metrics, champ_metrics, metrics)[2]
    elif require_clean_validation and not clean:
        promoted, reason = False, "validation not clean"
        table = compare(cand_metrics, champ_metrics, metrics)[2]
    elif lost:
        promoted, reason = False, f"knows fewer classes than the champion (missing: {', '.join(lost)})"
        table = compare(cand_metrics, champ_metrics, metrics)[2]
    else:
        promoted, reason, table = compare(cand_metrics, champ_metrics, metrics)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)

    decision = {
        "model": name,
        "version": int(candidate.version),
        "run_id": candidate.run_id,
        "promoted": promoted,
        "reason": reason,
        "champion_before": int(current.version) if current is not None else None,
        "champion_after": int(candidate.version) if promoted else (int(current.version) if current else None),
        "challenger": int(candidate.version),
        "validation_clean": clean,
        "require_clean_validation": require_clean_validation,
        "metrics": table,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _record(client, candidate, decision)
    log.info("promotion of %s v%s: %s (%s)", name, candidate.version,
             "champion" if promoted else "stays challenger", reason)
    return decision


def _classes(run: Any) -> set[str]:
    """The classes a run's model learned (its ``classes`` parameter); empty when not logged."""
    from netdiffusion.tracking.runs import _MAX_PARAM_VALUE

    value = str(run.data.params.get("classes") or "") if run is not None else ""
    names = [c for c in value.split(",") if c]
    if len(value) >= _MAX_PARAM_VALUE:
        names = names[:-1]  # MLflow's parameter limit cut the list: its last name may be cut too
    return set(names)


def _record(client: Any, candidate: Any, decision: dict[str, Any]) -> None:
    """Write the decision where people look: the version's tags and the candidate run."""
    verdict = "promoted" if decision["promoted"] else "rejected"
    client.set_model_version_tag(candidate.name, candidate.version, "promotion.decision", verdict)
    client.set_model_version_tag(candidate.name, candidate.version, "promotion.reason", decision["reason"][:5000])
    compared = decision["champion_before"]
    client.set_model_version_tag(candidate.name, candidate.version, "promotion.compared_to",
                                 "" if compared is None else str(compared))
    if candidate.run_id:
        stamp = decision["time"].replace(":", "").replace("-", "")
        client.log_dict(candidate.run_id, decision, f"promotion/decision-v{candidate.version}-{stamp}.json")
        client.set_tag(candidate.run_id, "netdiffusion.promotion", verdict)
        client.set_tag(candidate.run_id, "netdiffusion.promotion.reason", decision["reason"][:5000])
