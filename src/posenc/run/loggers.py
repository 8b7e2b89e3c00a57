"""The run's loggers: built from ``cfg.logger`` (one option or several, ``logger=[wandb,tensorboard]``;
the CSV copy always among them), told how the run ended, and closed.

:func:`publish` gives every logger the same record of a run, whatever its ending: the summary
(``train/converged``, ``train/steps``, the ``rel_decrease`` values and every other non-list value of
``metrics.json``), the run's ``status`` with its fields (``error``, ``signal``, ...) and every figure
in the run's ``figures/``. W&B gets them as summary values and images; TensorBoard as scalars (and
one hparams record over the config), text and images; the CSV logger nothing more (its
``metrics.csv`` is the record). Lightning and the logging packages are imported only when used.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from posenc.errors import first_line, require_extra

log = logging.getLogger(__name__)

# the exit code each ending hands W&B (``Run.finish``): 0 marks the run finished, anything else failed
EXIT_CODES = {"completed": 0, "failed": 1}


def build_loggers(node: DictConfig) -> list[Any]:
    """Instantiate every entry of ``cfg.logger`` that is not null; a logger whose package is missing
    is one line naming the extra that installs it (``pip install 'posenc[tensorboard]'``)."""
    from hydra.utils import instantiate

    if node.get("wandb") is not None:
        require_extra("wandb", "logger=wandb", "wandb")
    if node.get("tensorboard") is not None and importlib.util.find_spec("tensorboardX") is None:
        require_extra("tensorboard", "logger=tensorboard", "tensorboard")  # Lightning writes through either
    return [instantiate(entry) for entry in node.values() if entry is not None]


def started(logger: Any) -> bool:
    """Whether ``logger`` has opened its experiment (a W&B run, an event file, a CSV writer)."""
    return getattr(logger, "_experiment", None) is not None


def summary_values(metrics: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The non-list, non-null values of ``metrics`` with ``status``'s fields over them."""
    merged = {**metrics, **status}
    return {k: v for k, v in merged.items() if v is not None and not isinstance(v, (list, tuple, dict))}


def figure_paths(figures_dir: Path) -> list[Path]:
    """Every PNG in ``figures_dir`` (none when it does not exist), by name."""
    return sorted(Path(figures_dir).glob("*.png")) if Path(figures_dir).is_dir() else []


def publish(loggers: Sequence[Any], metrics: Mapping[str, Any], status: Mapping[str, Any], figures_dir: Path) -> None:
    """Give every started logger the run's summary, ``status`` (status.json's content: ``status``
    and its fields) and the figures of ``figures_dir``, at the run's last step. A logger that never
    started (the run failed before it logged anything) is left alone."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    summary = summary_values(metrics, status)
    steps = summary.get("train/steps")
    step = int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else 0
    figures = figure_paths(figures_dir)
    for logger in loggers:
        if not started(logger):
            continue
        if isinstance(logger, WandbLogger):
            _publish_wandb(logger, summary, figures, step)
        elif isinstance(logger, TensorBoardLogger):
            _publish_tensorboard(logger, summary, figures, step)
        # CSVLogger: metrics.csv already holds every logged metric; metrics.json holds the rest


def _publish_wandb(logger: Any, summary: Mapping[str, Any], figures: Sequence[Path], step: int) -> None:
    logger.experiment.summary.update(dict(summary))
    for path in figures:
        logger.log_image(key=f"figures/{path.stem}", images=[str(path)], step=step)


def _publish_tensorboard(logger: Any, summary: Mapping[str, Any], figures: Sequence[Path], step: int) -> None:
    import numpy as np
    from PIL import Image

    numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (bool, int, float))}
    # the scalars, and the hparams record pairing the config (logged at the start) with them
    logger.log_hyperparams(dict(logger.hparams), metrics=numbers, step=step)
    writer = logger.experiment
    for key, value in summary.items():
        if key not in numbers:
            writer.add_text(key, str(value), step)
    for path in figures:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        writer.add_image(f"figures/{path.stem}", pixels, step, dataformats="HWC")
    writer.flush()


def finish_loggers(loggers: Sequence[Any], exit_code: int = 0) -> None:
    """Close W&B runs (``exit_code`` != 0 marks one failed) and TensorBoard event files, so runs of
    a multirun never bleed into each other."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is None:
            continue
        if hasattr(experiment, "finish"):  # a W&B run
            experiment.finish(exit_code=exit_code)
        elif hasattr(experiment, "close"):  # TensorBoard's SummaryWriter
            experiment.close()


def end_loggers(
    loggers: Sequence[Any],
    metrics: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    figures_dir: Path,
    exit_code: int | None = None,
) -> None:
    """:func:`publish` the run's ending (``status`` None: nothing to publish, as on ranks > 0) and
    :func:`finish_loggers`. Best effort: a logger that fails is a warning, never the run's error."""
    name = (status or {}).get("status")
    code = exit_code
    if code is None:  # from the ending: 0 completed, else 1 (no status: 1)
        code = EXIT_CODES.get(name, 1) if isinstance(name, str) else 1
    try:
        if status is not None:
            publish(loggers, metrics, status, figures_dir)
    except Exception as exc:  # noqa: BLE001 - the run's own ending is already recorded
        log.warning("the loggers did not get the run's ending (%s): %s", name, first_line(exc))
    try:
        finish_loggers(loggers, code)
    except Exception as exc:  # noqa: BLE001
        log.warning("closing the loggers failed: %s", first_line(exc))
