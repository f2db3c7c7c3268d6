"""Pre-training and fine-tuning with the paper's recipes: configs, the loop, checkpoints, commands."""
from .checkpoint import list_checkpoints, load_state
from .config import apply_overrides, list_configs, load_config
from .loop import TrainingDiverged, build_model, evaluate, train

__all__ = ["TrainingDiverged", "apply_overrides", "build_model", "evaluate", "list_checkpoints", "list_configs",
           "load_config", "load_state", "train"]
