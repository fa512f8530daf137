"""Optuna's own plots on the parent run (optuna.visualization.matplotlib), made readable in the MLflow UI."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from ._state import SweepState
from ._trials import bare_names

log = logging.getLogger(__name__)


FEW_TRIALS = 10  # below this many complete trials, importances are a guess


def _readable_copy(state: SweepState) -> optuna.Study:
    """The study in memory with bare parameter names (``max_depth``, not ``model.max_depth``: axis labels are cut
    to a dozen characters) and without parameters every trial shares (an axis of one value says nothing)."""
    trials = [t for t in state.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varying = [k for k in state.space.distributions if len({repr(t.params.get(k)) for t in trials}) > 1]
    names = bare_names(varying)
    copy = optuna.create_study(direction=state.settings.objective.direction)
    copy.add_trials([optuna.trial.create_trial(
        params={names[k]: t.params[k] for k in varying if k in t.params},
        distributions={names[k]: t.distributions[k] for k in varying if k in t.distributions},
        value=t.value) for t in trials])
    return copy


def _integer_axes(fig: Any, study: optuna.Study) -> None:
    """Integer parameters on integer ticks (a parallel-coordinate axis is a twin axis per parameter)."""
    from matplotlib.ticker import MaxNLocator
    from optuna.distributions import IntDistribution

    integer = {k for t in study.trials for k, d in t.distributions.items() if isinstance(d, IntDistribution)}
    labels = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    for ax, name in zip(fig.axes[1:], labels[1:], strict=False):
        if name in integer:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def log_plots(state: SweepState) -> None:
    """Optuna's history, importances and parallel coordinates on the parent run, readable in the UI (bare names,
    integer axes, a note when few trials support the importances, 1000 x 650 px). Drawn inside a style context:
    optuna.visualization.matplotlib switches the global style to ggplot, which later figures would inherit."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    study = _readable_copy(state)
    study.set_metric_names([state.settings.objective.name])
    n = len(study.trials)
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    if n >= 2 and study.trials[0].params:
        plots["param_importances.png"] = ovm.plot_param_importances
        plots["parallel_coordinate.png"] = ovm.plot_parallel_coordinate
    for name, plot in plots.items():
        with plt.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = None
            try:
                ax = plot(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(10, 6.5)
                if name == "parallel_coordinate.png":
                    _integer_axes(fig, study)
                if name == "param_importances.png" and n < FEW_TRIALS:
                    title = fig.axes[0].get_title(loc="left")  # (Optuna's title is left-aligned)
                    fig.axes[0].set_title(f"{title}: from only {n} complete trials, a rough guess", loc="left")
                fig.tight_layout()
                state.runs.client.log_figure(state.runs.parent_id, fig, f"optuna/{name}")
            except (ValueError, RuntimeError, optuna.exceptions.OptunaError) as exc:  # e.g. no variation
                log.warning("optuna plot %s skipped: %s", name, exc)
            finally:
                if fig is not None:
                    plt.close(fig)
