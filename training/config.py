"""What one training command is asked to do, checked before anything is read or trained.

No TensorFlow here: the command refuses a configuration in one line, at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE
from ser_stream.windows import WindowConfig
from training.recipes import RECIPES

TRAINING_HOP_SECONDS = 0.25  # training windows start every this many seconds (training.dataset cuts them)

PROTOCOLS = ("random", "actors", "all")
KEEPS = ("best", "last", "average")


def validates(protocol: str, validation_actors: int) -> bool:
    """Whether a run keeps speakers apart to validate on: to pick its best epoch and to stop it early."""
    return protocol != "all" and not (protocol == "actors" and validation_actors == 0)


class TrainConfigError(SerStreamError):
    """A training configuration that cannot be run as asked; names the field (the command's option) and why."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training command was asked to do."""

    data: Path
    out: Path
    recipe: str = "improved"
    protocol: str = "actors"
    folds: int = 5
    fold: int | None = None  # None: every fold of the protocol
    balance_voices: bool = False  # actors protocol: as many male as female actors in each fold's test and validation
    validation_actors: int = 2  # actors protocol: speakers kept apart to validate on (0: none, every other speaker trains)
    training_actors: int | None = None  # actors protocol: train on only this many of the other speakers (how accuracy grows with speakers)
    epochs: int = 60
    seed: int = 0  # splits and feature augmentation
    model_seed: int | None = None  # initial weights and batch order; None: ``seed``. Same splits, another network: ensemble members
    batch_size: int = 32
    patience: int = 15
    windows_per_clip: int | None = None  # None: the recipe's
    frequency_warp: float | None = None  # None: the recipe's
    init_from: Path | None = None  # an earlier run folder: each split starts from its model there, on a fresh schedule
    resume: bool = False
    overwrite: bool = False  # train splits that already hold a run again from epoch 1 (without it they are refused)
    keep: str = "best"  # "best": the best validation epoch's weights (the command's default where it validates);
    # "last": the final epoch's, as an all-actors run ships (the command's default where nothing is validated);
    # "average": the mean of the last ``average_epochs`` epochs' weights (stochastic weight averaging)
    average_epochs: int = 10
    cache_dir: Path | None = Path(".cache")
    max_clips: int | None = None  # smoke runs: the first N clips of each emotion
    window: WindowConfig = field(default_factory=WindowConfig)
    # Distillation: ONNX models whose mean output on each augmented training window is mixed into its target,
    # ``distill_weight`` of it; "{split}" in a path stands for the split's name (a fold's teachers are that fold's models)
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.5

    def __post_init__(self) -> None:
        """Refuse a configuration that would train nothing, or the wrong thing, before any data is read."""
        for option, problem in self.problems():
            raise TrainConfigError(option, problem)

    def problems(self) -> list[tuple[str, str]]:
        """Each field that cannot be run as asked, with why, as ``(field, reason)``."""
        problems = []
        if self.recipe not in RECIPES:
            problems.append(("recipe", f"{self.recipe!r} is not one of {', '.join(RECIPES)}"))
        if self.protocol not in PROTOCOLS:
            problems.append(("protocol", f"{self.protocol!r} is not one of {', '.join(PROTOCOLS)}"))
        if self.keep not in KEEPS:
            problems.append(("keep", f"{self.keep!r} is not one of {', '.join(KEEPS)}"))
        for name, lowest in (("folds", 2), ("epochs", 0), ("batch_size", 1), ("patience", 1), ("average_epochs", 1)):
            if getattr(self, name) < lowest:
                problems.append((name, f"{getattr(self, name)} must be at least {lowest}"))
        for name in ("windows_per_clip", "max_clips"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append((name, f"{getattr(self, name)} must be at least 1"))
        if self.recipe in RECIPES and RECIPES[self.recipe].speaker_profiles_removed and self.protocol == "all":
            problems.append(("recipe", f"{self.recipe} needs each speaker's profile from all their clips, which the runtime cannot know: a screen, not a model to ship"))
        if self.fold is not None and self.protocol != "actors":
            problems.append(("fold", f"only with --protocol actors (the {self.protocol!r} protocol has one split)"))
        elif self.fold is not None and not 0 <= self.fold < self.folds:
            problems.append(("fold", f"{self.fold} is not one of the {self.folds} folds (0 to {self.folds - 1})"))
        if self.balance_voices and self.protocol != "actors":
            problems.append(("balance_voices", f"only with --protocol actors (the {self.protocol!r} protocol holds out no speakers)"))
        actors_options = (("validation_actors", self.validation_actors != 2), ("training_actors", self.training_actors is not None),
                          ("folds", self.folds != 5))
        for name, asked in actors_options:
            if asked and self.protocol != "actors":
                problems.append((name, f"only with --protocol actors (the {self.protocol!r} protocol holds out no speakers)"))
        if self.validation_actors < 0:
            problems.append(("validation_actors", f"{self.validation_actors} must be at least 0"))
        elif self.balance_voices and self.validation_actors not in (0, 2):
            problems.append(("validation_actors", f"{self.validation_actors} with --balance-voices, which validates on one man and one woman: 2 or 0"))
        if self.validation_actors == 0 and self.protocol == "actors" and self.keep == "best":
            problems.append(("validation_actors", "0 leaves no speakers to pick the best epoch on: use --keep last or --keep average"))
        if self.protocol == "all" and self.keep == "best":  # it was once the last epoch's, without a word
            problems.append(("keep", "best: the 'all' protocol keeps no speakers to pick the best epoch on: --keep last or --keep average"))
        if self.average_epochs != 10 and self.keep != "average":  # asked for and ignored, without a word, until refused
            problems.append(("average_epochs", f"{self.average_epochs}: only with --keep average"))
        if self.patience != 15 and not validates(self.protocol, self.validation_actors):
            problems.append(("patience", f"{self.patience}: no speakers are kept for validation, so nothing stops a run early"))
        if self.training_actors is not None and self.training_actors < 1:
            problems.append(("training_actors", f"{self.training_actors} must be at least 1"))
        if self.epochs == 0 and self.init_from is None:
            problems.append(("epochs", "0 only with --init-from (which then exports the earlier run's weights as they are)"))
        if self.keep == "average" and self.average_epochs > self.epochs:
            problems.append(("average_epochs", f"{self.average_epochs} must be at most --epochs ({self.epochs})"))
        if self.keep == "average" and validates(self.protocol, self.validation_actors) and self.patience < self.epochs:  # nothing stops it early otherwise
            problems.append(("patience", f"{self.patience} is below --epochs ({self.epochs}): early stopping could end the run before the epochs --keep average averages"))
        if self.frequency_warp is not None and not 0.0 <= self.frequency_warp < 0.5:
            problems.append(("frequency_warp", f"{self.frequency_warp} is outside 0 to 0.5"))
        if self.window.hop_samples % round(TRAINING_HOP_SECONDS * SAMPLE_RATE):  # its evaluation windows are those of the training hop that classify also cuts
            problems.append(("hop", f"{self.window.hop_seconds} s is not a multiple of the training hop ({TRAINING_HOP_SECONDS} s): validation and test would score fewer windows than classify cuts"))
        if not 0.0 <= self.distill_weight <= 1.0:
            problems.append(("distill_weight", f"{self.distill_weight} is outside 0 to 1"))
        if self.resume and self.overwrite:
            problems.append(("overwrite", "with --resume: carry the run on, or train it again from epoch 1, not both"))
        # Last: the files it names, once the numbers are known to be sensible
        if self.out == Path("."):  # `--out "$RUN"` with RUN unset (Path("") is ".") once trained five folds into the repository
            problems.append(("out", f"{str(self.out)!r} is the current folder: name a run folder (it gets a subfolder per split and summary.json)"))
        for name in ("out", "cache_dir"):
            path = getattr(self, name)
            if path is not None and path.exists() and not path.is_dir():
                problems.append((name, f"{path} is a file, not a folder to write in"))
        if self.init_from is not None and not self.init_from.is_dir():
            problems.append(("init_from", f"{self.init_from} is not a run folder"))
        for template in self.teachers:
            if "{split}" not in template and not Path(template).is_file():
                problems.append(("teacher", f"{template}: no such model file"))
        return problems
