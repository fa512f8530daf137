"""The parent run as the study's summary: what a person opening it in the MLflow UI should see without digging.

- its description (MLflow's run note): the best trial with its value ± spread and a link to its run, the counts,
  what was pinned, and the final stage's run and registered version (links) once known;
- the best trial's parameters as the parent's own params, under their bare names (MLflow params never change: they
  are those of the best trial when first logged; a later, better trial is named in the description and tags);
- the best value under the trials' own metric names, so one column compares the parent with its trials;
- the search space and the pinned values in full, as an artifact (a tag is cut short in the UI).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

from mlflow.entities import Param
from optuna.trial import FrozenTrial

from ._context import RUN_ATTR
from ._state import SweepState
from ._trials import bare_names, best_of, counts, shown, verdict, vs_start, with_spread

log = logging.getLogger(__name__)
NOTE_TAG = "mlflow.note.content"


def _run_link(state: SweepState, run_id: str, text: str) -> str:
    return f"[{text}](#/experiments/{state.runs.experiment_id}/runs/{run_id})"


def description(state: SweepState, trials: Sequence[FrozenTrial], final: Optional[dict[str, Any]]) -> str:
    s = state.settings
    best = best_of(trials, s.objective.direction)
    n = counts(trials)
    lines = [f"**Optuna study** `{state.study.study_name}`: {s.objective.direction} `{s.objective.name}`; "
             f"{n['n_complete']} complete, {n['n_pruned']} pruned, {n['n_failed']} failed of {s.n_trials} trials."]
    if best is not None:
        spread = best.user_attrs.get(s.objective.spread) if s.objective.spread else None
        run = best.user_attrs.get(RUN_ATTR)
        where = f" ({_run_link(state, run, f'trial-{best.number:03d}')})" if run else ""
        params = ", ".join(f"{bare_names(list(best.params))[k]}={v}" for k, v in best.params.items())
        lines.append(f"**Best**: trial {best.number}{where}, `{s.objective.name}` "
                     f"**{with_spread(best.value, spread)}**; {params}.")
    else:
        lines.append("**Best**: no trial completed yet.")
    line = verdict(trials, s.objective.direction, s.baseline, s.objective.name)
    if line:
        lines.append(f"**Against the configured model**: {line}.")
    if state.stopped_early:
        lines.append(f"**Stopped early** (hydra.sweeper.stop_when_converged): {state.stopped_early}.")
    pinned = ", ".join(f"{k}={v}" for k, v in shown(state.space.pinned).items()) or "nothing"
    lines.append(f"**Pinned**: {pinned}. **Search space**: "
                 + ", ".join(f"{k}: `{v}`" for k, v in state.space.expressions.items()) + " (in full: artifact "
                 "`study/search_space.yaml`).")
    if final:
        text = f"**{s.final.run_name}**: {_run_link(state, final['run_id'], final['run_id'][:8])}"
        links = final.get("links") or {}
        if links:  # what the final job named for people to open (e.g. a registered model version)
            text += "; " + ", ".join(f"[{label}]({href})" for label, href in links.items())
        returned = final.get("returned") or {}
        if returned:
            text += "; " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in returned.items())
        lines.append(text + ".")
    return "\n\n".join(lines)


def summarise(state: SweepState, final: Optional[dict[str, Any]] = None) -> None:
    """Write the summary on the parent run (best effort: the study itself holds every result)."""
    if state.runs.down:
        return
    client, parent = state.runs.client, state.runs.parent_id
    trials = state.study.get_trials(deepcopy=False)
    s = state.settings
    best = best_of(trials, s.objective.direction)
    client.set_tag(parent, NOTE_TAG, description(state, trials, final))
    client.log_dict(parent, {"search_space": dict(state.space.expressions), "pinned": shown(state.space.pinned),
                             "objective": {"name": s.objective.name, "direction": s.objective.direction}},
                    "study/search_space.yaml")
    if best is None:
        return
    client.log_metric(parent, s.objective.name, round(best.value, 4))  # 4 decimals, as every value is printed
    spread = best.user_attrs.get(s.objective.spread) if s.objective.spread else None
    if isinstance(spread, (int, float)):
        client.log_metric(parent, str(s.objective.spread), round(spread, 4))
    found = vs_start(best, s.baseline)
    if found is not None:  # the best minus the configured model, paired on the same rows, and its 95 % interval
        for suffix, value in zip(("", "_low", "_high"), found, strict=True):
            client.log_metric(parent, f"best_vs_configured{suffix}", round(value, 4))
    # the winning configuration in full: the best trial's sampled values and the values pinned beside them (the
    # pinned keys of the nodes the search space samples, e.g. model.n_estimators=10 beside model.max_depth)
    nodes = {k.rsplit(".", 1)[0] for k in state.space.distributions if "." in k}
    pinned = {k: v for k, v in shown(state.space.pinned).items() if "." in k and k.rsplit(".", 1)[0] in nodes}
    values = {**pinned, **best.params}
    names = bare_names(list(values))
    logged = client.get_run(parent).data.params
    wanted = {names[k]: str(v) for k, v in values.items()}
    if any(logged.get(k) not in (None, v) for k, v in wanted.items()):
        client.set_tag(parent, "best_params_since", f"trial {best.number}: " + ", ".join(
            f"{k}={v}" for k, v in wanted.items()))  # params are immutable: the newer best goes in a tag
        return
    missing = [Param(k, v) for k, v in wanted.items() if k not in logged]
    if missing:
        client.log_batch(parent, params=missing)
