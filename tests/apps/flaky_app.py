"""The real training task, except that chosen trials fail on purpose: for testing the sweeper's failure handling.

FLAKY_RAISE / FLAKY_NAN: comma-separated trial numbers that raise / return NaN; FLAKY_RAISE_SHARE: a share
(0..1) of trial numbers that raise: with 0.3, trials 0-2 of every ten.
"""

import os

import hydra
from omegaconf import DictConfig

from src.config import validate
from src.jobs import trial
from src.train import cli


def _numbers(name: str) -> set[int]:
    return {int(n) for n in os.environ.get(name, "").split(",") if n.strip()}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    typed = validate(cfg)
    number = typed.sweep.trial_number
    share = float(os.environ.get("FLAKY_RAISE_SHARE", "0"))
    if typed.sweep.stage == "trial" and (number in _numbers("FLAKY_RAISE") or number % 10 < round(share * 10)):
        raise RuntimeError(f"injected failure in trial {number}")
    if typed.sweep.stage == "trial" and number in _numbers("FLAKY_NAN"):
        return float("nan")
    return trial.run(typed, cfg)


if __name__ == "__main__":
    cli(main)
