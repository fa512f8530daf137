"""The job's side of the sweep: the one module of this plugin that a task imports.

The sweeper passes plain overrides to the jobs it launches (they may run in other processes or on other machines):
``<job_context>.study_name``, ``.storage``, ``.trial_number``, ``.parent_run_id``, ``.run_id`` and ``.stage``, the
fields of :class:`JobContext`, which the task's config schema includes under the node named by the sweeper's
``job_context`` setting. A job finds its Optuna trial again through the shared storage (:class:`TrialLink`).

The contract back is the task's return value: a number (the objective), or a mapping holding the objective under
``objective.name`` and other values (numbers or short strings) that the sweeper keeps on the trial. A job that
raises ``optuna.TrialPruned`` is PRUNED; any other exception fails the trial.

Beside that: the attribute names the sweeper writes on trials and studies, and the helpers for the stores a job
shares with the sweeper (redacting a URL's secrets, checking a tracking URI, opening an experiment).

This module only re-exports: Hydra's plugin scan executes every public module of ``hydra_plugins`` again, which
would give its classes a second identity; the definitions live in ``_context``, ``_redact``, ``_stores`` and
``_where`` (the scan skips ``_`` modules).
"""

from ._context import (
    COUNTED_FAILURES,
    ERROR_ATTR,
    FAIL_REASON_ATTR,
    FINAL,
    NOTE_ATTR,
    PARENT_ATTR,
    PARTIAL_ATTR,
    PRUNER_ATTR,
    RUN_ATTR,
    START_ATTR,
    TRIAL,
    FailReason,
    JobContext,
    Stage,
    Terminated,
    TrialLink,
    check_interrupted,
    recorded_trial,
    sigterm_as_interrupt,
)
from ._redact import redact
from ._stores import (
    StoreError,
    artifact_location,
    check_tracking_uri,
    is_integrity_race,
    is_unreachable,
    limit_http_retries,
    open_experiment,
)
from ._where import how_to_open, source_tags, ui_url

__all__ = [
    "COUNTED_FAILURES",
    "ERROR_ATTR",
    "FAIL_REASON_ATTR",
    "FINAL",
    "FailReason",
    "JobContext",
    "NOTE_ATTR",
    "PARENT_ATTR",
    "PARTIAL_ATTR",
    "PRUNER_ATTR",
    "RUN_ATTR",
    "START_ATTR",
    "Stage",
    "StoreError",
    "TRIAL",
    "Terminated",
    "TrialLink",
    "artifact_location",
    "check_interrupted",
    "check_tracking_uri",
    "how_to_open",
    "is_integrity_race",
    "is_unreachable",
    "limit_http_retries",
    "open_experiment",
    "recorded_trial",
    "redact",
    "sigterm_as_interrupt",
    "source_tags",
    "ui_url",
]
