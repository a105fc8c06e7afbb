"""Training of numpy models: job specs, datasets, models, a step-wise run, model files.

Pure computation: numpy and the standard library only, no I/O beyond reading data files,
nothing of the network. Everything public is re-exported here.
"""

from ._checkpoint import CheckpointError
from ._data import DataError, Dataset, shard
from ._files import read_features
from ._loading import load_dataset
from ._model_file import ModelFileError, TrainedModel, load_model
from ._run import Progress, Run, RunStatus, TrainingFailed, TrainResult
from ._spec import (
    DatasetSpec,
    Hyperparameters,
    JobSpec,
    ModelSpec,
    Resources,
    SpecError,
)

__all__ = [
    "CheckpointError",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "Hyperparameters",
    "JobSpec",
    "ModelFileError",
    "ModelSpec",
    "Progress",
    "Resources",
    "Run",
    "RunStatus",
    "SpecError",
    "TrainResult",
    "TrainedModel",
    "TrainingFailed",
    "load_dataset",
    "load_model",
    "read_features",
    "shard",
]
