"""The training loop: splits, batches, validation on whole clips, checkpoints, reports, export."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ser_stream import EMOTIONS
from ser_stream.cli import cannot_write_in
from ser_stream.errors import SerStreamError, one_line, shown
from ser_stream.inference import EmotionModel
from ser_stream.model import OUTPUT_NAME
from training import evaluate
from training.augment import frequency_warp, paper_image_transform, spec_augment
from training.backend import keras
from training.config import TrainConfig
from training.dataset import (
    VARIANTS,
    FeatureSet,
    build_features,
    clip_names_sha256,
    random_split,
    remove_speaker_profiles,
)
from training.export import checked_parity, export_onnx, write_metadata
from training.network import SPEAKER_OUTPUT, GradientReversal, StyleMixing, build_model, emotion_network
from training.ravdess import scan
from training.recipes import RECIPES, Recipe
from training.reports import (
    CHECKPOINT_STATE,
    METRICS,
    ReportError,
    checkpoint_state,
    evaluated_recipe,
    heard_actors,
    is_count,
    read_checkpoint_state,
    read_json,
    recorded_window,
    require_keys,
)

# Progress on stdout, each message one line however long: rich wrapped them at 80 columns where stdout is not a
# terminal (a background run's log), splitting a result line in two. A terminal wraps long lines itself.
console = Console(soft_wrap=True, emoji=False)  # a path's ":cat:" printed as a cat


def report_problem(line: str) -> None:
    """A file left out or a warning: one line on stderr, as ``training.dataset`` says an unreadable clip (a bad name
    once went to stdout among the epochs)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Split:
    name: str
    train: NDArray[np.int64]
    validation: NDArray[np.int64]
    test: NDArray[np.int64]


def is_male(actors: NDArray[np.integer] | int) -> NDArray[np.bool_] | bool:
    """RAVDESS numbers its male actors odd and its female actors even."""
    return actors % 2 == 1


def first_of_each_voice(actors: list[int]) -> list[int]:
    """The first male and the first female actor of ``actors``, in that order (either may be missing)."""
    return [voice[0] for voice in ([a for a in actors if is_male(a)], [a for a in actors if not is_male(a)]) if voice]


def make_splits(features: FeatureSet, config: TrainConfig) -> list[Split]:
    """Clip indices per split. ``random``: the paper's stratified 75/25 (10 % of the 75 kept for
    validation); ``actors``: k folds of held-out speakers, ``validation_actors`` more (two by default) for
    validation (with ``balance_voices``, as many men as women in each), the rest (or ``training_actors``
    of them) to train; ``all``: every clip trains."""
    rng = np.random.default_rng(config.seed)
    clips = np.arange(len(features.clip_labels))
    if config.protocol == "all":
        return [Split("all", clips, clips[:0], clips[:0])]
    if config.protocol == "random":
        picked = random_split(features.clip_labels, config.seed)
        if not len(picked["test"]):  # it once trained, scored nothing and exported a model without a word
            raise SerStreamError(f"--protocol random: {len(clips)} clips leave none to test on (a quarter of each emotion's, rounded); give at least 3 clips of an emotion")
        return [Split("random", picked["train"], picked["validation"], picked["test"])]
    actors = np.unique(features.clip_actors)
    if config.balance_voices:
        # Deal the men, then the women, round the folds, so each fold holds out both voices alike.
        dealt = np.concatenate([rng.permutation(actors[is_male(actors) == male]) for male in (True, False)])
        groups = [dealt[index :: config.folds] for index in range(config.folds)]
    else:
        groups = np.array_split(rng.permutation(actors), config.folds)
    # Every fold draws its validation speakers from the generator as it stands after the groups: a fold is then the
    # same split whether `--fold K` or every fold was asked for (an all-folds run once advanced it fold by fold, so
    # its "fold2" trained and validated on other speakers than `--fold 2`'s, under the same name).
    after_groups = rng.bit_generator.state
    splits = []
    for index, test_actors in enumerate(groups):
        if config.fold is not None and index != config.fold:
            continue
        rng.bit_generator.state = after_groups
        others = [a for a in rng.permutation(actors) if a not in test_actors]
        validation_actors = others[: config.validation_actors]
        if config.balance_voices and config.validation_actors:
            validation_actors = first_of_each_voice(others)
        training_actors = [a for a in others if a not in validation_actors]
        name = f"fold{index}-actors-" + "-".join(f"{a:02d}" for a in sorted(test_actors))
        if config.training_actors is not None:
            if config.training_actors > len(training_actors):
                raise SerStreamError(f"--training-actors {config.training_actors}: {name} has only {len(training_actors)} speakers left to train on")
            training_actors = training_actors[: config.training_actors]  # the same seed's smaller sets are nested
        test = clips[np.isin(features.clip_actors, test_actors)]
        validation = clips[np.isin(features.clip_actors, validation_actors)]
        train = clips[np.isin(features.clip_actors, training_actors)]
        if not len(train) or not len(test):
            raise SerStreamError(f"{name}: {'no clips to train on' if not len(train) else 'no held-out actor'} (actors {sorted(map(int, actors))})")
        splits.append(Split(name, train, validation, test))
    return splits


def check_speakers(actors: set[int], config: TrainConfig) -> None:
    """Refuse, before any feature is computed, an actors protocol whose folds would hold out or train on nobody."""
    if config.protocol != "actors":
        return
    if config.folds > len(actors):
        held = f"--max-clips {config.max_clips} keeps clips of" if config.max_clips else f"{config.data} has"  # a smoke run's own limit
        raise SerStreamError(f"--folds {config.folds}: {held} only {len(actors)} actors to hold out")
    held_out = [len(group) for group in np.array_split(np.arange(len(actors)), config.folds)]  # make_splits' group sizes
    most = max(held_out) if config.fold is None else held_out[config.fold]
    left = len(actors) - most - (min(2, config.validation_actors) if config.balance_voices else config.validation_actors)
    if left < 1:
        raise SerStreamError(
            f"--validation-actors {config.validation_actors}: of {len(actors)} actors, a fold holds out {most} and validates on "
            f"{config.validation_actors}, which leaves none to train on"
        )
    if config.training_actors is not None and config.training_actors > left:
        raise SerStreamError(f"--training-actors {config.training_actors}: a fold has only {left} speakers left to train on")


COMMAND_OVERRIDES = ("windows_per_clip", "frequency_warp")  # recipe fields the training command may set


def with_command_overrides(recipe: Recipe, config: TrainConfig) -> Recipe:
    """The recipe as this command runs it: each field in ``COMMAND_OVERRIDES`` the command set replaces the recipe's."""
    overrides = {name: getattr(config, name) for name in COMMAND_OVERRIDES if getattr(config, name) is not None}
    return replace(recipe, **overrides)


def earlier_split(run_folder: Path, split_name: str, config: TrainConfig | None = None) -> tuple[Path, int]:
    """The model an earlier run trained for this split, and its epochs, to start a warm restart from; refused if it
    was trained as another recipe or on other windows than ``config`` asks (its weights once loaded all the same)."""
    model_path = run_folder / split_name / "model.keras"
    if not model_path.is_file():
        raise SerStreamError(f"--init-from {run_folder}: no model for split {split_name} ({model_path} is missing)")
    metrics_path = run_folder / split_name / "metrics.json"
    if not metrics_path.is_file():
        return model_path, 0
    try:
        metrics = require_keys(read_json(metrics_path, METRICS), metrics_path, METRICS, ("epochs_run",))
    except ReportError as error:
        raise SerStreamError(f"--init-from {run_folder}: {error}") from None
    epochs = metrics["epochs_run"]
    if not is_count(epochs):
        raise SerStreamError(f"--init-from {run_folder}: {shown(metrics_path)}: not {METRICS} ('epochs_run' is not a count of epochs)")
    if config is not None:
        recipe, window = evaluated_recipe(metrics_path, metrics), recorded_window(metrics_path.parent)
        if recipe is not None and recipe != config.recipe:
            raise SerStreamError(f"--init-from {run_folder}: {split_name} was trained as recipe {recipe!r}, this run trains {config.recipe!r}; start from a run of the same recipe")
        if window is not None and window[0] != config.window.window_seconds:
            raise SerStreamError(
                f"--init-from {run_folder}: {split_name} was trained on {window[0]} s windows, this run cuts {config.window.window_seconds} s; "
                "start from a run of the same --window"
            )
    return model_path, epochs


def earlier_network(config: TrainConfig, split_name: str) -> tuple[keras.Model, Path, int]:
    """``earlier_split``'s model loaded, with one line naming ``--init-from`` if it is not a readable Keras model."""
    assert config.init_from is not None
    model_path, epochs = earlier_split(config.init_from, split_name, config)
    try:
        return keras.models.load_model(model_path, compile=False), model_path, epochs
    except Exception as error:  # Keras raises ValueError, zipfile and OS errors alike ("File not found" for a damaged one)
        raise SerStreamError(f"--init-from {config.init_from}: {shown(model_path)}: not a readable Keras model ({one_line(error)})") from None


def network_seed(config: TrainConfig) -> int:
    return config.seed if config.model_seed is None else config.model_seed


def load_teachers(config: TrainConfig, split_name: str, held_out: set[int]) -> list[EmotionModel]:
    """The split's teacher models, each checked to have been trained on this very split and, by actor, to have
    heard none of ``held_out`` (its validation and test speakers; the split's name and seed alone once let a teacher
    trained on the student's validation actor in).

    A teacher that had heard the split's validation or test speakers would pass
    what it learnt from them into the student's targets.
    """
    teachers = []
    for template in config.teachers:
        path = Path(template.replace("{split}", split_name))
        if not path.is_file():
            raise SerStreamError(f"--teacher {path}: no such model file")
        try:
            teacher = EmotionModel(path, provider="cpu")
        except SerStreamError as error:  # it names the file; the option says which of the command's files it is
            raise SerStreamError(f"--teacher {error}") from None
        trained_on = teacher.metadata.metrics.get("split")
        split_seed = teacher.metadata.metrics.get("training", {}).get("seed")
        if trained_on != split_name or split_seed != config.seed:
            raise SerStreamError(
                f"--teacher {path}: trained on split {trained_on!r} (seed {split_seed}), not {split_name!r} (seed {config.seed}); "
                "it may have heard this split's held-out speakers"
            )
        if config.protocol == "actors" and (heard := held_out & set(heard_actors(teacher.metadata.metrics))):
            raise SerStreamError(
                f"--teacher {path}: learnt from actor{'s' if len(heard) > 1 else ''} {', '.join(map(str, sorted(heard)))}, whom this split "
                "holds out (for validation or test); train the teacher with the same --validation-actors"
            )
        teachers.append(teacher)
    return teachers


class TrainingBatches(keras.utils.PyDataset):
    """Each epoch, ``windows_per_clip`` random windows of every training clip, augmented per recipe."""

    def __init__(
        self, features: FeatureSet, clips: NDArray[np.int64], recipe: Recipe, config: TrainConfig,
        teachers: list[EmotionModel] | None = None, first_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.features, self.recipe, self.config = features, with_command_overrides(recipe, config), config
        self.teachers = teachers or []
        self.epoch = first_epoch - 1  # on_epoch_end below moves to first_epoch: 0, or the epoch a resume starts at
        candidates = features.windows_of(clips, recipe.variants)
        self.windows_by_clip = [candidates[features.window_clip[candidates] == c] for c in clips]
        self.labels = features.clip_labels[clips]
        # The speaker adversary's classes: the training clips' actors, in order.
        self.speakers = np.unique(features.clip_actors[clips]) if recipe.speaker_adversary > 0 else np.zeros(0, np.int32)
        counts = np.bincount(self.labels, minlength=len(EMOTIONS)).astype(np.float64)
        weights = counts.sum() / (len(EMOTIONS) * np.maximum(counts, 1))
        self.class_weight = weights if recipe.class_weights else np.ones(len(EMOTIONS))
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        """The next epoch's windows, in order. Its generator is seeded by the epoch: a resumed run draws what the
        uninterrupted one would have (it once started again from the first epoch's draws)."""
        self.epoch += 1
        self.rng = np.random.default_rng([network_seed(self.config) + 1, self.epoch])
        picks = []
        for clip_windows, label in zip(self.windows_by_clip, self.labels):
            for window in self.rng.choice(clip_windows, size=self.recipe.windows_per_clip):
                picks.append((int(window), int(label)))
        self.rng.shuffle(picks)
        self.epoch_picks = picks

    def __len__(self) -> int:
        return int(np.ceil(len(self.epoch_picks) / self.config.batch_size))

    def speaker_targets(self, batch: list[tuple[int, int]]) -> NDArray[np.float32]:
        """One-hot: which training actor speaks in each window of the batch (the speaker adversary's target)."""
        actors = self.features.clip_actors[self.features.window_clip[[window for window, _ in batch]]]
        return keras.utils.to_categorical(np.searchsorted(self.speakers, actors), len(self.speakers)).astype(np.float32)

    def __getitem__(self, index: int) -> tuple[NDArray[np.float32], Any, Any]:
        """Images, targets and sample weights; with a speaker adversary, targets and weights are per output."""
        batch = self.epoch_picks[index * self.config.batch_size : (index + 1) * self.config.batch_size]
        images = []
        for window, _ in batch:
            image = self.features.spectrograms[window].astype(np.float32)
            if self.recipe.paper_augmentation:
                image = paper_image_transform(image, self.rng)
            if self.recipe.frequency_warp > 0:
                warp = self.recipe.frequency_warp
                image = frequency_warp(image, self.rng.uniform(1 - warp, 1 + warp))
            if self.recipe.spec_augment:
                image = spec_augment(image, self.rng)
            images.append(image)
        x = np.stack(images)[..., None]
        labels = np.array([label for _, label in batch])
        y = keras.utils.to_categorical(labels, len(EMOTIONS)).astype(np.float32)
        if self.teachers:  # cross-entropy against this mix = (1 - w) × the label's + w × the teachers' (distillation, T = 1)
            soft = np.mean([teacher.predict(x) for teacher in self.teachers], axis=0)
            y = (1 - self.config.distill_weight) * y + self.config.distill_weight * soft
        weights = self.class_weight[labels].astype(np.float32)
        speakers = self.speaker_targets(batch) if len(self.speakers) else None
        if self.recipe.mixup_alpha > 0:
            mix = self.rng.beta(self.recipe.mixup_alpha, self.recipe.mixup_alpha, size=len(batch)).astype(np.float32)
            mix = np.maximum(mix, 1 - mix)
            partner = self.rng.permutation(len(batch))
            x = mix[:, None, None, None] * x + (1 - mix[:, None, None, None]) * x[partner]
            y = mix[:, None] * y + (1 - mix[:, None]) * y[partner]
            if speakers is not None:
                speakers = mix[:, None] * speakers + (1 - mix[:, None]) * speakers[partner]
            weights = mix * weights + (1 - mix) * weights[partner]
        if speakers is not None:
            return x, {OUTPUT_NAME: y, SPEAKER_OUTPUT: speakers}, {OUTPUT_NAME: weights, SPEAKER_OUTPUT: np.ones_like(weights)}
        return x, y, weights


def predict_windows(model: keras.Model, features: FeatureSet, windows: NDArray[np.int64], batch_size: int = 64) -> NDArray[np.float32]:
    outputs = []
    for start in range(0, len(windows), batch_size):
        chunk = features.spectrograms[windows[start : start + batch_size]].astype(np.float32)[..., None]
        outputs.append(model(chunk, training=False).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, len(EMOTIONS)), np.float32)


def clip_scores(model: keras.Model, features: FeatureSet, clips: NDArray[np.int64], variant: str = "clean") -> tuple[dict[str, float], NDArray[np.int64]]:
    """Scores of whole clips (mean of their windows) and the confusion matrix."""
    windows = features.eval_windows(clips, variant)
    probabilities = evaluate.clip_probabilities(predict_windows(model, features, windows), features.window_clip[windows], clips)
    true = features.clip_labels[clips]
    predicted = probabilities.argmax(axis=1)
    return evaluate.scores(true, predicted), evaluate.confusion(true, predicted)


def recalibrate_batch_norm(model: keras.Model, features: FeatureSet, clips: NDArray[np.int64], batches: int = 12, seed: int = 0) -> None:
    """Re-estimate batch-norm statistics for the current weights from training windows.

    The moving averages kept during training lag weights that change quickly;
    inference uses them, so we refresh them (weights untouched) before any
    evaluation or export. Statistics are averaged over ``batches`` batches.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    windows = np.random.default_rng(seed).permutation(features.windows_of(clips, VARIANTS))[: batches * 32]
    momenta = [layer.momentum for layer in norms]
    mixers = [layer for layer in model.layers if isinstance(layer, StyleMixing)]
    for layer in mixers:
        layer.enabled = False  # statistics of the inputs inference sees, not of restyled ones
    for step, start in enumerate(range(0, len(windows), 32)):
        for layer in norms:
            layer.momentum = step / (step + 1)  # a running mean over the batches seen
        model(features.spectrograms[np.sort(windows[start : start + 32])].astype(np.float32)[..., None], training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    for layer in mixers:
        layer.enabled = True


class ClipValidation(keras.callbacks.Callback):
    """Adds ``val_mean_per_class_accuracy`` and ``val_clip_accuracy`` (whole clips, paper's rule) to the logs."""

    def __init__(self, features: FeatureSet, clips: NDArray[np.int64], train_clips: NDArray[np.int64]) -> None:
        super().__init__()
        self.features, self.clips, self.train_clips = features, clips, train_clips

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.network = emotion_network(self.model)  # the layers it shares train on; built once, not every epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None or len(self.clips) == 0:
            return
        recalibrate_batch_norm(self.network, self.features, self.train_clips, batches=6, seed=epoch)
        result, _ = clip_scores(self.network, self.features, self.clips)
        logs["val_mean_per_class_accuracy"] = result["mean_per_class_accuracy"]
        logs["val_clip_accuracy"] = result["accuracy"]


class EpochSeeds(keras.callbacks.Callback):
    """Seeds Keras' random state (dropout masks, style mixing) at the start of each epoch from the model seed and the
    epoch, as ``TrainingBatches`` seeds the batches: a resumed run then draws what the uninterrupted one would have.

    A checkpoint keeps no random state; its dropout layers were once seeded afresh at load, unseeded.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        keras.utils.set_random_seed(int(np.random.default_rng([self.seed, epoch]).integers(2**31)))
        generators = [generator for layer in self.model._flatten_layers() for generator in layer._seed_generators]
        for index, generator in enumerate(generators):  # each its own stream, in layer order
            generator.state.assign(np.array([np.random.default_rng([self.seed, epoch, index]).integers(2**31), 0], dtype=generator.state.dtype))


class SpeakerAdversaryRamp(keras.callbacks.Callback):
    """Raises the gradient reversal's strength from 0 towards the recipe's over the run (DANN's schedule).

    Early on the speaker head has learnt nothing worth reversing; full strength
    from the first step only adds noise to features that do not exist yet.
    """

    def __init__(self, strength: float, total_epochs: int) -> None:
        super().__init__()
        self.strength, self.total_epochs = strength, total_epochs

    def strength_at(self, epoch: int) -> float:
        progress = epoch / max(1, self.total_epochs)
        return float(self.strength * (2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for layer in self.model.layers:
            if isinstance(layer, GradientReversal):
                layer.strength.assign(self.strength_at(epoch))


class WeightAverage(keras.callbacks.Callback):
    """Keeps the running mean of the weights at the end of each of the last ``epochs`` epochs.

    Stochastic weight averaging (Izmailov et al. 2018): the mean of weights
    along the end of a run sits nearer the centre of a flat minimum than any
    one of them, which generalises better and varies less from seed to seed.
    The sum is checkpointed with the run so ``--resume`` keeps it; batch-norm
    statistics are re-estimated for the averaged weights afterwards.
    """

    def __init__(self, folder: Path, total_epochs: int, epochs: int, resumed_after: int | None) -> None:
        super().__init__()
        self.path, self.first_epoch = folder / "average.npz", max(0, total_epochs - epochs)
        self.total: list[NDArray[np.float64]] | None = None
        self.count, self.through_epoch = 0, -1  # epochs summed; the last of them (0-based)
        if resumed_after is None:
            self.path.unlink(missing_ok=True)  # a fresh run: an earlier run's sum is not ours
        elif self.path.exists():
            try:
                with np.load(self.path) as saved:
                    self.count, self.through_epoch = int(saved["count"]), int(saved["through_epoch"])
                    self.total = [saved[f"w{index}"] for index in range(len(saved.files) - 2)]
            except Exception as error:  # numpy raises zipfile, OS and key errors alike: the reason is what matters
                raise SerStreamError(f"{shown(self.path)}: not a readable sum of weights ({one_line(error)}); --overwrite trains the split again") from None
            if self.through_epoch - self.count + 1 != self.first_epoch:  # the run was carried on to more epochs
                self._restart(resumed_after, total_epochs, epochs)

    def _restart(self, resumed_after: int, total_epochs: int, epochs: int) -> None:
        """A run carried on to more epochs averages later ones: drop the sum of the earlier ones, as long as no epoch
        the new average needs has passed but the checkpointed last one (``catch_up`` adds that)."""
        if resumed_after - 1 > self.first_epoch:
            raise SerStreamError(
                f"--keep average: the last {epochs} of {total_epochs} epochs start at epoch {self.first_epoch + 1}, but this run "
                f"is past epoch {resumed_after} and kept only the sum of epochs {self.through_epoch - self.count + 2}–{self.through_epoch + 1}; "
                f"use --average-epochs {total_epochs - resumed_after + 1} or fewer, or --overwrite"
            )
        self.total, self.count, self.through_epoch = None, 0, self.first_epoch - 1

    def add(self, weights: list[NDArray[Any]], epoch: int) -> None:
        weights64 = [np.asarray(w, dtype=np.float64) for w in weights]
        self.total = weights64 if self.total is None else [t + w for t, w in zip(self.total, weights64)]
        self.count, self.through_epoch = self.count + 1, epoch
        partial = self.path.with_suffix(".partial.npz")
        arrays: dict[str, Any] = {"count": self.count, "through_epoch": epoch, **{f"w{index}": t for index, t in enumerate(self.total)}}
        np.savez(partial, **arrays)
        os.replace(partial, self.path)

    def catch_up(self, weights: list[NDArray[Any]], completed_epochs: int) -> None:
        """On resume: add the checkpointed last epoch if the run stopped after saving it but before summing it."""
        last = completed_epochs - 1
        if last >= self.first_epoch and self.through_epoch == last - 1:
            self.add(weights, last)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch >= self.first_epoch:
            self.add(self.model.get_weights(), epoch)

    def averaged(self) -> list[NDArray[np.float32]]:
        if self.total is None:
            raise RuntimeError("no epoch has been averaged yet")
        return [(t / self.count).astype(np.float32) for t in self.total]


# What a run folder's checkpoints were trained as: a resumed run must ask for the same (epochs and patience may
# grow: a run carried on further is still the same run).
NOT_IDENTITY = ("fold", "resume", "overwrite", "epochs", "patience", "cache_dir", "out")


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """The configuration a run folder's checkpoints and summary belong to, as JSON values."""
    recipe = with_command_overrides(RECIPES[config.recipe], config)
    chosen = {key: value for key, value in asdict(config).items() if key not in NOT_IDENTITY}
    # The data folder resolved: `--data ../data/tiny` from another folder is the same data (it was once refused)
    chosen["data"] = config.data.resolve()
    return json.loads(json.dumps({**chosen, "recipe": asdict(recipe), "model_seed": network_seed(config)}, default=str))


def identity_differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``option: earlier → now`` for each setting that differs (an option a newer version added counts only if set)."""
    differences = []
    for key in sorted(set(earlier) | set(now)):
        if key == "data" and isinstance(earlier.get(key), str) and Path(earlier[key]).resolve() == Path(now[key]):
            continue  # runs before it was recorded resolved: the same folder however spelled
        if key in earlier and earlier.get(key) != now.get(key):
            if key == "recipe" and isinstance(earlier[key], dict) and isinstance(now.get(key), dict):
                changed = [name for name in earlier[key] if earlier[key][name] != now[key].get(name)]
                differences.append(f"recipe {', '.join(f'{n}: {earlier[key][n]!r} → {now[key].get(n)!r}' for n in changed)}")
            else:
                differences.append(f"--{key.replace('_', '-')} {earlier[key]!r} → {now.get(key)!r}")
    return differences


def check_same_run(folder: Path, config: TrainConfig, what: str, earlier: dict[str, Any] | None) -> None:
    """Refuse to carry on (``what``) a run folder whose earlier runs were trained with other settings."""
    if earlier is None:  # written before runs recorded their settings: nothing to compare
        return
    differences = identity_differences(earlier, run_identity(config))
    if differences:
        raise SerStreamError(f"{what} {folder}: its runs were trained with other settings ({'; '.join(differences)}); use another --out")


def split_clips(features: FeatureSet, split: Split) -> str:
    """A digest of which clips a split trains, validates and tests on, by name: the same settings on a data folder
    that has changed make another split."""
    digest = hashlib.sha256()
    for part in (split.train, split.validation, split.test):
        digest.update("\n".join(sorted(features.clip_names[index] for index in part)).encode("utf-8", "backslashreplace") + b"\0")
    return digest.hexdigest()


def check_resumable(folder: Path, config: TrainConfig, recipe: Recipe, features: FeatureSet, split: Split, state_file: Path) -> None:
    """Refuse to carry on a split's checkpoints (its state.json, read once) trained with other settings, to other
    epochs of a cosine schedule, to fewer epochs than were run, or on other clips."""
    state = read_json(state_file, CHECKPOINT_STATE)
    recorded = state if isinstance(state, dict) else {}
    identity = recorded.get("identity")
    check_same_run(folder, config, "--resume", identity if isinstance(identity, dict) else None)
    # A cosine schedule over other epochs: the checkpoint keeps the one it started with, so the learning rate would
    # follow the old epochs while metrics.json recorded the new (a constant rate may be extended).
    planned = recorded.get("epochs")  # checkpoints before it was recorded: unknown
    if recipe.cosine_decay and is_count(planned) and planned != config.epochs:
        raise SerStreamError(
            f"--resume {folder}: its learning rate follows a cosine schedule over {planned} epochs, not --epochs {config.epochs}; "
            f"resume with --epochs {planned}, or start a new --out with --init-from (a warm restart)"
        )
    # Fewer epochs than were run: accepted, it recorded the lower figure beside weights of the higher.
    done = checkpoint_state(state, state_file)[0]
    if done > config.epochs:
        raise SerStreamError(f"--resume {folder}: it has run {done} epochs, more than --epochs {config.epochs}; give --epochs {done} or more")
    # Other clips (added to, gone from the data folder): its test clips would have been trained on, or its training
    # clips tested on, without a word.
    clips = recorded.get("clips")  # checkpoints before it was recorded: unknown
    if isinstance(clips, str) and clips != split_clips(features, split):
        raise SerStreamError(
            f"--resume {folder}: the data folder no longer gives the clips this split was trained, validated and tested on "
            "(clips were added, removed or renamed); train it again with --overwrite, or into another --out"
        )


STATE_IN_CHECKPOINT = "ser_stream_state.json"  # the run state of the epoch whose weights last.keras holds


def write_state(checkpoints: Path, state: dict[str, Any]) -> None:
    (checkpoints / "state-partial.json").write_text(json.dumps(state))
    os.replace(checkpoints / "state-partial.json", checkpoints / "state.json")


def state_from_checkpoint(checkpoints: Path) -> None:
    """state.json as last.keras records it, where a run was stopped after writing the one and before the other: the
    epoch whose weights it held once trained again on resume. Checkpoints from before the record are left as they are."""
    try:
        with zipfile.ZipFile(checkpoints / "last.keras") as bundle:
            recorded = json.loads(bundle.read(STATE_IN_CHECKPOINT))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # none, or damaged: load_checkpoint names it if it must
        return
    state_file = checkpoints / "state.json"
    if state_file.exists():
        try:
            written = json.loads(state_file.read_text()).get("epoch")
        except (OSError, ValueError, AttributeError):  # damaged: left for the resume to refuse, naming it
            return
        if not is_count(written):
            return
    else:
        written = -1
    if isinstance(recorded, dict) and is_count(recorded.get("epoch")) and recorded["epoch"] > written:
        write_state(checkpoints, recorded)


def recorded_identity(path: Path, key: str) -> dict[str, Any] | None:
    """The settings a checkpoint state (``identity``) or a summary (``settings``) recorded, if it did (older runs did not)."""
    recorded = read_json(path, CHECKPOINT_STATE if key == "identity" else "a run's summary.json")
    value = recorded.get(key) if isinstance(recorded, dict) else None
    return value if isinstance(value, dict) else None


def learning_rate_for(recipe: Recipe, epochs: int, steps_per_epoch: int) -> Any:
    """The recipe's rate: constant, or a cosine decay over the whole run to 5 % of its peak at the last step."""
    if not recipe.cosine_decay:
        return recipe.learning_rate
    return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=max(1, epochs * steps_per_epoch), alpha=0.05)


def make_optimizer(recipe: Recipe, learning_rate: Any) -> keras.optimizers.Optimizer:
    """Adam; SGD with Nesterov momentum if the recipe asks; AdamW when it decays weights: kernels only, as biases and batch-norm scales carry no capacity to curb."""
    if recipe.sgd_momentum > 0:
        return keras.optimizers.SGD(learning_rate, momentum=recipe.sgd_momentum, nesterov=True)
    if recipe.weight_decay <= 0:
        return keras.optimizers.Adam(learning_rate)
    optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
    spare_from_decay(optimizer)
    return optimizer


def spare_from_decay(optimizer: keras.optimizers.Optimizer) -> None:
    """Biases and batch-norm scales and shifts are not decayed; a saved checkpoint forgets this, so a resume says it again."""
    if isinstance(optimizer, keras.optimizers.AdamW):
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])


def load_checkpoint(path: Path) -> keras.Model:
    """A checkpoint written by this loop; one line naming it if it cannot be read (a run killed mid-write, a disk error)."""
    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises ValueError, zipfile and OS errors alike: the reason is what matters
        raise SerStreamError(f"{shown(path)}: not a readable checkpoint ({one_line(error)}); delete {shown(path.parent)} to start the split afresh") from None


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that, on resume, still knows the best epoch so far and how long it has waited since."""

    def __init__(self, scores_so_far: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores_so_far = scores_so_far

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.scores_so_far:
            best = int(np.argmax(self.scores_so_far))
            self.best, self.best_epoch, self.wait = self.scores_so_far[best], best, len(self.scores_so_far) - 1 - best


class RunState(keras.callbacks.Callback):
    """Saves the model and history after every epoch so a run can resume; prints one line per epoch."""

    def __init__(self, folder: Path, history: dict[str, list[float]], total_epochs: int, identity: dict[str, Any], clips: str) -> None:
        super().__init__()
        self.folder, self.history, self.total_epochs, self.identity = folder, history, total_epochs, identity
        self.clips = clips  # split_clips: which clips it trains, validates and tests on
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.total_epochs}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal,
        )
        self.progress.start()
        self.task = self.progress.add_task("batches", total=self.params.get("steps"))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.stop()
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        # Written aside, then renamed: a run stopped mid-write leaves the previous epoch's checkpoint whole. The
        # state goes inside the checkpoint too, so one rename writes both; state.json, the readable copy, follows.
        state = {"epoch": epoch + 1, "epochs": self.total_epochs, "history": self.history, "identity": self.identity, "clips": self.clips}
        self.model.save(self.folder / "last-partial.keras")
        with zipfile.ZipFile(self.folder / "last-partial.keras", "a") as bundle:
            bundle.writestr(STATE_IN_CHECKPOINT, json.dumps(state))
        os.replace(self.folder / "last-partial.keras", self.folder / "last.keras")
        write_state(self.folder, state)
        figures = "  ".join(f"{k} {float(v):.3f}" for k, v in logs.items() if k != "learning_rate")
        console.print(f"[bold]epoch {epoch + 1}/{self.total_epochs}[/]  {figures}")


SplitInputs = tuple[list[EmotionModel], tuple[keras.Model, Path, int] | None]  # its teachers; the earlier run's (network, file, epochs)


def train_split(features: FeatureSet, split: Split, recipe: Recipe, config: TrainConfig, folder: Path, inputs: SplitInputs) -> dict[str, Any]:
    """Train, pick the best validation epoch, score the test clips, export ONNX; return the metrics.

    ``inputs`` were loaded (and refused, if bad) by ``run`` before any split was trained."""
    checkpoints = folder / "checkpoints"
    model, batches, history, initial_epoch = prepare_model(features, split, recipe, config, folder, inputs)
    callbacks, averaging = training_callbacks(features, split, recipe, config, checkpoints, model, history, initial_epoch, len(batches.speakers))
    has_validation = len(split.validation) > 0
    scores_so_far = history.get("val_mean_per_class_accuracy", [])
    stopped_early = has_validation and len(scores_so_far) - 1 - int(np.argmax(scores_so_far or [0.0])) >= config.patience
    console.print(f"[bold]{split.name}[/]: {len(split.train)} training, {len(split.validation)} validation, {len(split.test)} test clips; recipe {recipe.name}")
    if initial_epoch < config.epochs and not (stopped_early and scores_so_far):  # a resume of a run early stopping ended trains no more
        model.fit(batches, epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)
    if stopped_early_after(history, config, has_validation) is not None:
        console.print(early_stopping_line(split.name, history["val_mean_per_class_accuracy"], config))
    if config.keep == "best" and has_validation and (checkpoints / "best.keras").exists():
        model = load_checkpoint(checkpoints / "best.keras")
    if averaging is not None:
        if averaging.count == 0:
            raise SerStreamError(f"{split.name}: stopped after epoch {len(history.get('loss', []))}, before the last {config.average_epochs} epochs of {config.epochs} it was to average; raise --patience or --average-epochs")
        model.set_weights(averaging.averaged())
    model = emotion_network(model)  # what is evaluated, saved and exported: the speaker head was for training only
    recalibrate_batch_norm(model, features, split.train)
    model.save(folder / "model.keras")

    metrics = split_metrics(features, split, batches.recipe, config, inputs, history, averaging)
    evaluate.plot_curves(history, folder / "curves.png")
    parity_inputs = features.spectrograms[features.eval_windows(split.test if len(split.test) else split.train)[:16]].astype(np.float32)[..., None]
    if len(split.test):
        write_test_reports(model, features, split, recipe, folder, metrics)
    onnx_path = folder / "model.onnx"
    export_onnx(model, onnx_path, config.window)
    metrics["onnx_parity_max_abs_diff"] = checked_parity(model, onnx_path, parity_inputs)
    write_metadata(onnx_path, config.window, recipe.name, config.protocol, metrics, str(config.data))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if len(split.test):
        clean = metrics["test_clean"]
        console.print(f"[bold green]{split.name}[/]: test mean per-class accuracy {clean['mean_per_class_accuracy']:.3f}, accuracy {clean['accuracy']:.3f}; ONNX parity {metrics['onnx_parity_max_abs_diff']:.2e}")
    return metrics


def prepare_model(
    features: FeatureSet, split: Split, recipe: Recipe, config: TrainConfig, folder: Path, inputs: SplitInputs
) -> tuple[keras.Model, TrainingBatches, dict[str, list[float]], int]:
    """The split's network and batches: resumed from its last checkpoint, or built afresh (from an earlier run's
    weights with ``--init-from``) and compiled; with the history so far and the number of epochs already run."""
    teachers, earlier = inputs
    checkpoints = folder / "checkpoints"
    state_file = checkpoints / "state.json"
    resuming = config.resume and state_file.exists()  # run() refused a state without its last.keras
    if not resuming and folder.exists():
        # --overwrite (run() refused it otherwise): no earlier checkpoint, sum of weights, metrics.json, model or
        # confusion matrix may linger; an interrupted overwrite once left the old results beside the new checkpoints
        shutil.rmtree(folder)
    checkpoints.mkdir(parents=True, exist_ok=True)
    history: dict[str, list[float]] = {}
    initial_epoch = 0
    if resuming:
        initial_epoch, history = read_checkpoint_state(state_file)
    batches = TrainingBatches(features, split.train, recipe, config, teachers, first_epoch=initial_epoch)
    if resuming:
        model = load_checkpoint(checkpoints / "last.keras")
        spare_from_decay(model.optimizer)
        console.print(f"resuming {split.name} after epoch {initial_epoch}")
        return model, batches, history, initial_epoch
    model = build_model(recipe, network_seed(config), speakers=len(batches.speakers))
    if earlier is not None:
        # A warm restart (SGDR): earlier weights, a learning-rate schedule from its peak again.
        start_from = earlier[1]
        try:
            model.set_weights(earlier[0].get_weights())  # weights only: the optimizer starts afresh
        except ValueError as error:
            raise SerStreamError(f"--init-from {config.init_from}: {start_from} is not a network of recipe {recipe.name} ({error})") from None
        console.print(f"{split.name}: starting from {escape(str(start_from))}")
    learning_rate = learning_rate_for(recipe, config.epochs, len(batches))
    emotion_loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
    optimizer = make_optimizer(recipe, learning_rate)
    if len(batches.speakers):
        model.compile(
            optimizer=optimizer,
            loss={OUTPUT_NAME: emotion_loss, SPEAKER_OUTPUT: keras.losses.CategoricalCrossentropy()},
            metrics={OUTPUT_NAME: ["accuracy"], SPEAKER_OUTPUT: ["accuracy"]},
        )
    else:
        model.compile(optimizer=optimizer, loss=emotion_loss, metrics=["accuracy"])
    return model, batches, history, initial_epoch


def training_callbacks(
    features: FeatureSet, split: Split, recipe: Recipe, config: TrainConfig, checkpoints: Path, model: keras.Model,
    history: dict[str, list[float]], initial_epoch: int, speakers: int,
) -> tuple[list[keras.callbacks.Callback], WeightAverage | None]:
    """What runs after each epoch: seeds, clip validation, the best checkpoint and early stopping (with validation clips),
    the speaker adversary's ramp, the run state; and the weight average with ``--keep average``, also returned."""
    callbacks: list[keras.callbacks.Callback] = [EpochSeeds(network_seed(config)), ClipValidation(features, split.validation, split.train)]
    scores_so_far = history.get("val_mean_per_class_accuracy", [])
    if len(split.validation) > 0:
        # On resume both carry on from the epochs already run: the best so far stays best.keras until beaten.
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                checkpoints / "best.keras", monitor="val_mean_per_class_accuracy", mode="max", save_best_only=True,
                initial_value_threshold=max(scores_so_far) if scores_so_far else None,
            ),
            ResumedEarlyStopping(scores_so_far, monitor="val_mean_per_class_accuracy", mode="max", patience=config.patience),
        ]
    if speakers:
        callbacks.append(SpeakerAdversaryRamp(recipe.speaker_adversary, config.epochs))
    callbacks.append(RunState(checkpoints, history, config.epochs, run_identity(config), split_clips(features, split)))
    averaging = None
    if config.keep == "average":
        averaging = WeightAverage(checkpoints, config.epochs, config.average_epochs, initial_epoch if initial_epoch else None)
        averaging.catch_up(model.get_weights(), initial_epoch)
        callbacks.append(averaging)  # after RunState: a sum at most one epoch behind state.json, which catch_up repairs
    return callbacks, averaging


def stopped_early_after(history: dict[str, list[float]], config: TrainConfig, has_validation: bool) -> int | None:
    """The epoch after which early stopping ended the run (``--patience`` epochs without a better validation score,
    before ``--epochs``), or None where it ran every epoch or validated on nobody."""
    scores = history.get("val_mean_per_class_accuracy", [])
    if not has_validation or not scores or len(scores) >= config.epochs:
        return None
    return len(scores) if len(scores) - 1 - int(np.argmax(scores)) >= config.patience else None


def early_stopping_line(split_name: str, scores: list[float], config: TrainConfig) -> str:
    """What ends a run early, said in one line: a run once stopped short of ``--epochs`` without a word."""
    best = int(np.argmax(scores))
    waited = len(scores) - 1 - best
    return (
        f"{split_name}: early stopping ended the run after epoch {len(scores)} of {config.epochs} (--patience {config.patience}): "
        f"validation mean per-class accuracy {scores[-1]:.3f}, best {scores[best]:.3f} at epoch {best + 1}, "
        f"none better in the {waited} epoch{'s' if waited != 1 else ''} since"
    )


def split_metrics(
    features: FeatureSet, split: Split, recipe: Recipe, config: TrainConfig, inputs: SplitInputs, history: dict[str, list[float]],
    averaging: WeightAverage | None,
) -> dict[str, Any]:
    """What a split's metrics.json says of its training (``recipe``: as the batches applied it, the command's overrides
    included): settings, actors, teachers, the weights kept, the best validation epoch and whether early stopping ended
    the run (``epochs_run`` is then the epoch it stopped after)."""
    teachers, earlier = inputs
    has_validation = len(split.validation) > 0
    metrics: dict[str, Any] = {"split": split.name, "recipe": recipe.name, "epochs_run": len(history.get("loss", []))}
    metrics["training"] = {"epochs": config.epochs, **{name: getattr(recipe, name) for name in COMMAND_OVERRIDES}, "batch_size": config.batch_size, "seed": config.seed, "model_seed": network_seed(config)}
    if has_validation:
        # --patience may change on --resume: the epochs without a better score at the end say what stopped the run
        scores = history.get("val_mean_per_class_accuracy", [])
        metrics["training"]["patience"] = config.patience
        metrics["training"]["epochs_without_gain"] = len(scores) - 1 - int(np.argmax(scores)) if scores else 0
    metrics["training"]["stopped_early"] = stopped_early_after(history, config, has_validation) is not None
    for part in ("train", "validation"):
        metrics["training"][f"{part}_actors"] = sorted(int(actor) for actor in np.unique(features.clip_actors[getattr(split, part)]))
    if teachers:
        metrics["training"]["teachers"] = [f"{teacher.path} ({teacher.metadata.sha256[:12]}…)" for teacher in teachers]
        metrics["training"]["distill_weight"] = config.distill_weight
    if earlier is not None:
        metrics["training"]["initialised_from"] = str(earlier[1].parent)
        metrics["training"]["earlier_epochs"] = earlier[2]
    if len(split.test):  # which clips it tested on, for training.score --random-split to hold its own to
        metrics["test_clips_sha256"] = clip_names_sha256(features.clip_names[index] for index in split.test)
    metrics["weights"] = "best validation epoch" if config.keep == "best" and has_validation else "last epoch"
    if averaging is not None:
        metrics["weights"] = f"mean of the last {averaging.count} epochs"
    if has_validation and history.get("val_mean_per_class_accuracy"):
        best = int(np.argmax(history["val_mean_per_class_accuracy"]))
        metrics["best_epoch"] = best + 1
        metrics["validation_mean_per_class_accuracy"] = history["val_mean_per_class_accuracy"][best]
    return metrics


def write_test_reports(model: keras.Model, features: FeatureSet, split: Split, recipe: Recipe, folder: Path, metrics: dict[str, Any]) -> None:
    """Score the test clips, clean and by telephone, into ``metrics``; write each one's confusion matrix (.md, .png, .csv)."""
    for variant in ("clean", "telephone"):
        if not features.windows_of(split.test[:1], (variant,)).size:  # a variant the features were not computed in
            continue
        result, matrix = clip_scores(model, features, split.test, variant)
        metrics[f"test_{variant}"] = result
        title = f"{recipe.name} / {split.name} / {variant}: rows true, columns predicted, row %"
        (folder / f"confusion_{variant}.md").write_text(evaluate.confusion_markdown(matrix, title))
        evaluate.plot_confusion(matrix, folder / f"confusion_{variant}.png", f"{recipe.name} {split.name} ({variant})")
        np.savetxt(folder / f"confusion_{variant}.csv", matrix, fmt="%d", delimiter=",")


def held_run(folder: Path) -> str | None:
    """What a split folder already holds from an earlier run (``6 epochs``, ``a finished run``), or None if nothing."""
    state_file = folder / "checkpoints" / "state.json"
    if state_file.is_file():
        try:
            return f"{read_checkpoint_state(state_file)[0]} epochs"
        except SerStreamError:
            return "checkpoints"
    if (folder / "metrics.json").is_file() or (folder / "model.onnx").is_file():
        return "a finished run"
    return None


def writable_folder(folder: Path, option: str) -> None:
    """Check that ``folder`` (or, while it does not exist, the folder it would be made in) takes files, without making
    it: a refused run leaves nothing behind. One line naming it and why if not."""
    nearest = next((path for path in (folder, *folder.absolute().parents) if path.exists()), Path("/"))
    if (reason := cannot_write_in(nearest)) is not None:
        raise SerStreamError(f"{option} {shown(folder)}: cannot write there ({reason})")


def limit_per_emotion(clips: list[Any], max_clips: int) -> list[Any]:
    """At most ``max_clips`` clips of each emotion, dealt from the actors in turn: the first N in path order were
    once all the first actor's, which left an actors protocol nobody else to hold out or train on."""
    kept: list[Any] = []
    for emotion in EMOTIONS:
        by_actor: dict[int, list[Any]] = {}
        for clip in clips:
            if clip.emotion == emotion:
                by_actor.setdefault(clip.actor, []).append(clip)
        dealt = [clip for turn in itertools.zip_longest(*by_actor.values()) for clip in turn if clip is not None]
        kept += sorted(dealt[:max_clips], key=lambda clip: clip.path)
    return kept


def run(config: TrainConfig) -> dict[str, Any]:
    """Train every split the protocol names; write one folder per split and a summary."""
    recipe = RECIPES[config.recipe]
    summary_path = config.out / "summary.json"
    if summary_path.is_file():  # another fold (or an earlier try) of a run: it must be the same run
        check_same_run(config.out, config, "--out", recorded_identity(summary_path, "settings"))
    clips, problems = scan(config.data)
    for problem in problems:
        report_problem(f"skipped {problem}")
    if config.max_clips:
        clips = limit_per_emotion(clips, config.max_clips)
    absent = [emotion for emotion in EMOTIONS if not any(clip.emotion == emotion for clip in clips)]
    if absent and clips:  # its mean per-class accuracy is then over fewer classes than the paper's
        report_problem(f"warning {config.data}: no clips of {', '.join(absent)}; mean per-class accuracy is over the other {len(EMOTIONS) - len(absent)} emotions")
    check_speakers({clip.actor for clip in clips}, config)
    writable_folder(config.out, "--out")  # before the features: an unwritable folder once failed after computing them
    if config.cache_dir is not None:
        writable_folder(config.cache_dir, "--cache-dir")
    variants = tuple(dict.fromkeys(("clean", "telephone") + recipe.variants))
    console.print(f"{len(clips)} clips from {escape(str(config.data))}; computing features ({', '.join(variants)})")
    features = build_features(clips, config.window, variants, config.seed, config.cache_dir)
    if recipe.speaker_profiles_removed:
        remove_speaker_profiles(features)
    splits = make_splits(features, config)
    inputs: dict[str, SplitInputs] = {}
    for split in splits:  # refuse before hours of training, not after, and before any folder is made
        state_file = config.out / split.name / "checkpoints" / "state.json"
        if config.resume:
            state_from_checkpoint(state_file.parent)
        if config.resume and state_file.is_file():
            check_resumable(config.out / split.name, config, recipe, features, split, state_file)
            if not (state_file.parent / "last.keras").is_file():  # it once started again from epoch 1 without a word
                raise SerStreamError(f"--resume {config.out / split.name}: {state_file.parent / 'last.keras'} is missing, so it cannot carry on; --overwrite trains the split again from epoch 1")
        elif not config.resume and not config.overwrite and (held := held_run(config.out / split.name)) is not None:
            raise SerStreamError(f"--out {config.out / split.name}: holds a run of this split ({held}); add --resume to carry it on, or --overwrite to train it again from epoch 1")
        elif config.resume and (held := held_run(config.out / split.name)) is not None:  # it was deleted and trained again
            raise SerStreamError(f"--resume {config.out / split.name}: holds {held} without its checkpoints, so it cannot carry on; --overwrite trains the split again from epoch 1")
        # a damaged earlier model or teacher once failed only when its split's turn came
        held_out = {int(actor) for actor in features.clip_actors[np.concatenate([split.validation, split.test])]}
        inputs[split.name] = (load_teachers(config, split.name, held_out), earlier_network(config, split.name) if config.init_from is not None else None)
    config.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"settings": run_identity(config), "splits": {}, "skipped_files": problems + features.skipped_clips}
    earlier = read_json(summary_path, "a run's summary.json") if summary_path.is_file() else None
    if isinstance(earlier, dict) and isinstance(earlier.get("settings"), dict):  # the same run (checked above)
        summary["splits"].update(earlier.get("splits") or {})
    elif earlier is not None:
        report_problem(f"warning {summary_path}: written before runs recorded their settings; it will list this run's splits only")
    for split in splits:  # the summary covers every split of the folder: those trained before (other folds) and these
        summary["splits"][split.name] = train_split(features, split, recipe, config, config.out / split.name, inputs[split.name])
    tested = [m["test_clean"] for m in summary["splits"].values() if "test_clean" in m]
    if tested:
        summary["mean_over_splits"] = {
            key: float(np.mean([t[key] for t in tested])) for key in ("mean_per_class_accuracy", "accuracy")
        }
        telephone = [m["test_telephone"] for m in summary["splits"].values() if "test_telephone" in m]
        if telephone:
            summary["mean_over_splits_telephone"] = {
                key: float(np.mean([t[key] for t in telephone])) for key in ("mean_per_class_accuracy", "accuracy")
            }
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
