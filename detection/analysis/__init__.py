"""The ResNet paper's analyses: layer responses (Fig. 7) and ablation sets (Tables 2-3, Fig. 4)."""

from .ablation import AblationSet, Member, ablation_rows, load_ablation_set, run_ablation
from .responses import (
    AnalysisModel,
    LayerResponse,
    ModelResponses,
    RunningMoments,
    backbone_model,
    checkpoint_model,
    image_paths,
    measure_responses,
    plot_responses,
    response_layers,
    write_csv,
)

__all__ = [
    "AblationSet",
    "AnalysisModel",
    "LayerResponse",
    "Member",
    "ModelResponses",
    "RunningMoments",
    "ablation_rows",
    "backbone_model",
    "checkpoint_model",
    "image_paths",
    "load_ablation_set",
    "measure_responses",
    "plot_responses",
    "response_layers",
    "run_ablation",
    "write_csv",
]
