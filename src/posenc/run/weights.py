"""``backbone.weights=<a posenc run dir or its .ckpt>``, resolved in the run layer, which owns the run-dir
layout (``checkpoints/last.ckpt``, ``status.json``): the run dir becomes its checkpoint file, and a run that did
not complete is refused in one line, before any model is built. The backbone then loads a plain ``.ckpt``
(:meth:`posenc.models.backbones.base.BackboneOptions.load_run`) without knowing what a run dir is."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from posenc.errors import PosencError
from posenc.models.backbones.base import NAMED_WEIGHTS
from posenc.run.run_dir import read_status

RUN_CHECKPOINT = Path("checkpoints") / "last.ckpt"  # a run dir's checkpoint (conf/callbacks/default.yaml)


def run_checkpoint(weights: str | None) -> Path | None:
    """The Lightning checkpoint ``weights`` names (a run dir or a ``.ckpt`` file), else None."""
    if weights is None or weights in NAMED_WEIGHTS:  # imagenet, hed: weights by name, not a path
        return None
    path = Path(weights).expanduser()
    if path.is_dir():
        ckpt = path / RUN_CHECKPOINT
        if not ckpt.is_file():
            raise PosencError(
                f"backbone.weights={weights} is a directory without {RUN_CHECKPOINT}: "
                "expected a posenc run dir, a .ckpt file or a state dict file"
            )
        check_source_run(weights, ckpt)
        return ckpt
    if path.suffix != ".ckpt":
        return None
    check_source_run(weights, path)
    return path


def check_source_run(weights: str, ckpt: Path) -> None:
    """Refuse the last checkpoint of a run that did not complete (failed, diverged, interrupted or
    still running): its weights are not what the run trained. ``init.ckpt`` (the weights before
    training) and checkpoints outside a run dir are taken as they are."""
    run_dir = ckpt.parent.parent
    if ckpt.name == "init.ckpt" or ckpt.parent.name != "checkpoints" or not (run_dir / "status.json").exists():
        return
    status = read_status(run_dir) or {"status": "unreadable"}
    if status.get("status") != "completed":
        why = f": {status['error']}" if status.get("error") else ""
        raise PosencError(
            f"backbone.weights={weights} is not valid: its run {run_dir} ended "
            f"{status.get('status')!r}{why}; valid: a completed run (or its checkpoints/init.ckpt)"
        )


def with_run_weights(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``backbone.weights`` (a posenc run dir or a run's ``.ckpt``) replaced by the checkpoint
    file it names (a copy; ``cfg`` itself, as the run records it, keeps the user's value)."""
    weights = OmegaConf.select(cfg, "backbone.weights", default=None)
    ckpt = run_checkpoint(weights) if isinstance(weights, str) else None
    if ckpt is None or str(ckpt) == weights:
        return cfg
    resolved = cfg.copy()
    with open_dict(resolved):
        resolved.backbone.weights = str(ckpt)
    return resolved
