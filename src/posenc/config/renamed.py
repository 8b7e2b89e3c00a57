"""``_target_`` paths that moved when posenc's modules were layered (issue 32), old -> new.

A run dir written before the move records the old paths in its ``config.yaml`` (and, rarely, in an override
such as ``task.scheduler._target_=...``). They name the same shipped code, so they are read as the new path
wherever posenc reads a run dir (``--resume``, the analysis commands, the trust check), never imported as
written; nothing else is accepted under an old name.
"""

from __future__ import annotations

from typing import Any

RENAMED_TARGETS: dict[str, str] = {
    "posenc.core.run_contract.PartialMetricsCallback": "posenc.run.run_dir.PartialMetricsCallback",
    "posenc.core.progress.StepProgressBar": "posenc.run.progress_bar.StepProgressBar",
    "posenc.core.checkpointing.RunCheckpoint": "posenc.run.checkpointing.RunCheckpoint",
    "posenc.core.convergence.LossCurve": "posenc.run.convergence.LossCurve",
    "posenc.core.schedules.multistep_at_fractions": "posenc.tasks.schedules.multistep_at_fractions",
    "posenc.models.timm_backbone.build_timm_backbone": "posenc.models.backbones.timm.build_timm_backbone",
    "posenc.models.vit_backbone.build_vit_backbone": "posenc.models.backbones.vit.build_vit_backbone",
    "posenc.models.module_backbone.build_module_backbone": "posenc.models.backbones.module.build_module_backbone",
}


def current_target(path: Any) -> Any:
    """The path ``path`` names now (itself when it did not move)."""
    return RENAMED_TARGETS.get(path, path) if isinstance(path, str) else path


def renamed_override(override: str) -> str:
    """``key._target_=<old path>`` -> ``key._target_=<new path>``; any other override as it is."""
    key, sep, value = override.partition("=")
    if sep and key.rstrip().endswith("_target_"):
        return f"{key}{sep}{current_target(value.strip())}"
    return override


def with_current_targets(node: Any) -> Any:
    """A plain config (dicts and lists, as ``OmegaConf.to_container`` gives) with every moved ``_target_``
    rewritten to its current path."""
    if isinstance(node, dict):
        return {k: current_target(v) if k == "_target_" else with_current_targets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [with_current_targets(v) for v in node]
    return node
