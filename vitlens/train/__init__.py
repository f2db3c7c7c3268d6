"""Pre-training and fine-tuning with the paper's recipes: configs, the loop, checkpoints, commands."""
from .checkpoint import list_checkpoints, load_state
from .config import (AugmentConfig, DataConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig, apply_overrides,
                     compiles, list_configs, load_config)
from .data import build_eval_loader
from .distributed import Dist, setup_distributed
from .loop import TrainingDiverged, evaluate, train
from .model import build_model, compile_model
from .rundir import RunWriteError

__all__ = ["AugmentConfig", "DataConfig", "Dist", "OptimConfig", "RunConfig", "RunWriteError", "ScheduleConfig",
           "TrainConfig", "TrainingDiverged", "apply_overrides", "build_eval_loader", "build_model", "compile_model",
           "compiles", "evaluate", "list_checkpoints", "list_configs", "load_config", "load_state",
           "setup_distributed", "train"]
