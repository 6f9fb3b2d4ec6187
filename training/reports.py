"""Reading the JSON reports the training tools pass each other (``training.score --out`` reports, a run's
metrics.json, benchmark figures): a missing or foreign file is one line naming it and the plain reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeGuard

from ser_stream.errors import SerStreamError, shown
from ser_stream.model import holds


class ReportError(SerStreamError):
    """A JSON report a tool reads (a ``training.score --out`` report, a run's metrics.json) that is missing or is not one."""


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path``, which should be ``what``; ``ReportError`` naming the file and the plain reason if none."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "a folder, not a file"
    except OSError as error:
        reason = f"cannot be read ({error.strerror or type(error).__name__})"
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8/16/32 text
        reason = f"not {what} (not valid JSON)"
    raise ReportError(f"{shown(path)}: {reason}")


def require_keys(report: Any, path: Path, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """``report`` if it is a JSON object holding every one of ``keys``; else ``ReportError``: not ``what``, and why."""
    if not isinstance(report, dict):
        raise ReportError(f"{shown(path)}: not {what} (not a JSON object)")
    missing = [key for key in keys if key not in report]
    if missing:
        raise ReportError(f"{shown(path)}: not {what} (no {missing[0]!r} key)")
    return report


METRICS = "a training run's metrics.json"
CHECKPOINT_STATE = "a run's checkpoint state"


def evaluated_recipe(path: Path, metrics: dict[str, Any]) -> str | None:
    """The recipe a metrics.json evaluated: its own record, or (runs before the seventh session) its run's summary.json."""
    if isinstance(metrics.get("recipe"), str):
        return str(metrics["recipe"])
    try:
        name = json.loads((path.parent.parent / "summary.json").read_text())["settings"]["recipe"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def recorded_window(split_folder: Path) -> tuple[float, float] | None:
    """The window and hop in seconds a run's split was trained and scored on, from its model.json; None if it has none.

    metrics.json does not record them; the metadata exported beside it does."""
    try:
        metadata = json.loads((split_folder / "model.json").read_text())
        window = (metadata["window_seconds"], metadata["hop_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return window if all(map(is_number, window)) else None


def heard_actors(metrics: dict[str, Any]) -> list[int]:
    """The actors a model learnt from or had its epoch picked on, as its metadata's metrics record them (an
    ensemble's: its members'); none if they are not recorded. Scores on them are not held-out evidence."""
    records = [metrics.get("training")] + [member.get("training") for member in metrics.get("members") or [] if isinstance(member, dict)]
    heard = {
        actor for record in records if isinstance(record, dict)
        for part in ("train_actors", "validation_actors") if isinstance(record.get(part), list)
        for actor in record[part] if is_count(actor)
    }
    return sorted(heard)


def is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number (``true`` is not one): the model metadata's own check, ``ser_stream.model.holds``."""
    return holds(value, (int, float))


def is_count(value: Any) -> TypeGuard[int]:
    """A JSON whole number of at least 0, such as a count of epochs."""
    return holds(value, (int,)) and value >= 0


def read_checkpoint_state(path: Path) -> tuple[int, dict[str, list[float]]]:
    """The epochs done and the per-epoch history a run saved in ``checkpoints/state.json``; ``ReportError`` if it is not that.

    Read by ``--resume`` and by ``training.compare``: a hand-edited or truncated file is one line, not a traceback.
    """
    return checkpoint_state(read_json(path, CHECKPOINT_STATE), path)


def checkpoint_state(value: Any, path: Path) -> tuple[int, dict[str, list[float]]]:
    """``read_checkpoint_state`` of a state.json already read (``value``, from ``path``)."""
    state = require_keys(value, path, CHECKPOINT_STATE, ("epoch", "history"))
    epoch, history = state["epoch"], state["history"]
    if not is_count(epoch):
        raise ReportError(f"{shown(path)}: not {CHECKPOINT_STATE} ('epoch' is not a count of epochs)")
    if not isinstance(history, dict) or not all(isinstance(values, list) and all(map(is_number, values)) for values in history.values()):
        raise ReportError(f"{shown(path)}: not {CHECKPOINT_STATE} ('history' is not lists of numbers by metric)")
    return epoch, {key: [float(v) for v in values] for key, values in history.items()}
