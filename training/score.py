"""Score exported ONNX models on held-out RAVDESS actors through the runtime's own path.

    python -m training.score --actors 3 5 7 20 --model runs/x/fold0-*/model.onnx [--model B.onnx ...]
    python -m training.score --random-split 0 --model runs/y/random/model.onnx [...]   # the paper's protocol

Every clip goes through ``read_audio`` → ``clip_spectrograms`` → ``EmotionModel.predict``
→ ``average_windows``, exactly as ``ser-stream classify`` does. Given several models it
scores their ensemble (the mean of their window outputs), which is how we decide
whether an ensemble is worth its inference cost.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.audiofile import audio_info, read_audio, rounding_floor
from ser_stream.cli import OneLineParser, output_file, whole_number
from ser_stream.clips import clip_spectrograms
from ser_stream.errors import SerStreamError, shown
from ser_stream.features import SAMPLE_RATE, resample_to_canonical
from ser_stream.inference import EmotionModel
from ser_stream.utterances import average_windows
from ser_stream.windows import TRIM_FLOOR, WindowConfig
from training import evaluate
from training.augment import frequency_warp, telephone
from training.dataset import clip_names_sha256, learnable_clips, random_split
from training.ensemble import check_members_agree
from training.ravdess import RavdessClip, require_actors, scan, skip_clip
from training.reports import heard_actors

# Test-time views: what else a clip is heard as, its window outputs averaged with those of the clip itself.
# "slower"/"faster": the clip played 5 % slower or faster (pitch, formants and tempo moved together, a nearby
# voice); "lower"/"higher": each window's frequency rows warped by 5 % (pitch and formants alone, as a network
# layer could do it); "telephone": the clip through another simulated phone line (which training sees).
PLAYBACK_SPEEDS = {"slower": 0.95, "faster": 1.05}
ROW_WARPS = {"lower": 0.95, "higher": 1.05}
TEST_TIME_VIEWS = (*PLAYBACK_SPEEDS, *ROW_WARPS, "telephone")


def clip_inputs(path: Path, window: WindowConfig, variant: str, seed: int, views: tuple[str, ...] = ()) -> NDArray[np.float32]:
    """The windows ``classify`` would cut from one clip (``telephone``: after a simulated phone line), then
    those of each test-time view of it, all in one array."""
    audio, rate = read_audio(path)
    floor = rounding_floor(audio_info(path))  # as classify trims it
    if variant == "telephone":
        audio = telephone(resample_to_canonical(audio, rate), np.random.default_rng(seed))
        rate, floor = SAMPLE_RATE, TRIM_FLOOR
    own = clip_spectrograms(audio, rate, window, floor)
    windows = [own]
    for view in views:
        if view in PLAYBACK_SPEEDS:  # read as if recorded at speed × its rate: played at its own rate, that much faster
            windows.append(clip_spectrograms(audio, round(rate * PLAYBACK_SPEEDS[view]), window, floor))
        elif view in ROW_WARPS:
            windows.append(np.stack([frequency_warp(image, ROW_WARPS[view]) for image in own]))
        else:
            line = telephone(resample_to_canonical(audio, rate), np.random.default_rng([seed, 1]))
            windows.append(clip_spectrograms(line, SAMPLE_RATE, window))
    return np.concatenate(windows)


def clip_seed(path: Path) -> int:
    """The simulated phone line's seed for a clip, from its name: seeded by its place in the list scored, a clip's
    telephone result changed with the actors scored beside it (actor 05: 62.5 % with 3, 7, 20; 60.9 % alone)."""
    return int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "big")


def score(
    models: list[EmotionModel], clips: list, window: WindowConfig, variant: str = "clean", views: tuple[str, ...] = (),
    skipped: list[str] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[dict]]:
    """Mean per-class accuracy, accuracy and per-class recall of the models' averaged outputs: all clips, and each
    actor's; and every clip's window outputs, to study what a change after the network (calibration) would do.

    A clip that cannot be read or classified is left out, said on stderr and listed in ``skipped``: one bad file
    once ended a whole scoring run with a traceback."""
    true, predicted, outputs_by_clip, scored = [], [], [], []
    for clip in clips:
        try:
            windows = clip_inputs(clip.path, window, variant, seed=clip_seed(clip.path), views=views)
        except SerStreamError as error:
            skip_clip(clip.path, error, skipped if skipped is not None else [])
            continue
        scored.append(clip)
        outputs = np.mean([model.predict(windows) for model in models], axis=0)
        true.append(clip.label_index)
        predicted.append(EMOTIONS.index(average_windows(outputs).label))
        outputs_by_clip.append({"clip": clip.path.name, "actor": clip.actor, "label": clip.emotion, "window_probabilities": np.round(outputs, 6).tolist()})
    if not scored:
        raise SerStreamError(f"none of the {len(clips)} clip(s) could be scored ({variant})")
    true_labels, predicted_labels, actors = np.asarray(true), np.asarray(predicted), np.asarray([clip.actor for clip in scored])
    by_actor = {
        f"{actor:02d}": evaluate.scores(true_labels[actors == actor], predicted_labels[actors == actor]) for actor in np.unique(actors)
    }
    return evaluate.scores(true_labels, predicted_labels), by_actor, outputs_by_clip


def random_split_test_clips(clips: list[RavdessClip], seed: int, models: list[EmotionModel], paths: list[Path]) -> list[RavdessClip]:
    """The clips the random protocol tests on with ``seed``, drawn as the training command draws them: over the clips
    its features keep (``learnable_clips``), not every clip scanned (one silent file once put 23 clips the model
    trained on among the 300 scored). Refused for a model trained otherwise, or tested on other clips (its training
    clips could then be among them)."""
    for path, model in zip(paths, models):
        members = model.metadata.metrics.get("members") or [model.metadata.metrics]
        protocols = {model.metadata.protocol} | {member.get("protocol", model.metadata.protocol) for member in members if isinstance(member, dict)}
        seeds = {(member.get("training") or {}).get("seed") for member in members if isinstance(member, dict)}
        if protocols != {"random"} or seeds != {seed}:
            raise SerStreamError(f"{shown(path)}: trained under protocol {', '.join(sorted(map(str, protocols)))} with seed "
                                 f"{', '.join(sorted(map(str, seeds)))}, not --protocol random --seed {seed}: its training clips would be among those scored")
    kept, _ = learnable_clips(clips)
    test = [kept[index] for index in random_split(np.array([clip.label_index for clip in kept]), seed)["test"]]
    digest = clip_names_sha256(clip.path.name for clip in test)
    for path, model in zip(paths, models):
        members = [member for member in model.metadata.metrics.get("members") or [model.metadata.metrics] if isinstance(member, dict)]
        recorded = [member.get("test_clips_sha256") for member in members]
        if any(tested is not None and tested != digest for tested in recorded):
            raise SerStreamError(f"{shown(path)}: its training run tested on other clips than the test quarter of the clips in --data "
                                 "(their sha256 differs): its training clips could be among those scored; give the --data it was trained on")
        if all(tested is not None for tested in recorded) and recorded:
            continue
        # runs before training recorded its test clips: only their number can be held to the split's
        tested = (model.metadata.metrics.get("test_clean") or {}).get("clips")
        if tested is not None and tested != len(test):
            raise SerStreamError(f"{shown(path)}: tested on {tested} clips, but the clips in --data split into {len(test)}: not the clips it was trained on")
        print(f"warning: {shown(path)}: records no digest of its test clips (trained before runs did); checked their number only, "
              "not which clips they are", file=sys.stderr)
    return test


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.score", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    held_out_by = parser.add_mutually_exclusive_group(required=True)
    held_out_by.add_argument("--actors", type=int, nargs="+", help="held-out actors to score on")
    held_out_by.add_argument("--random-split", type=whole_number(0), metavar="SEED",
                             help="the paper's protocol instead: the test quarter of `python -m training --protocol random --seed SEED`, for "
                             "models trained on that split (every speaker heard: no evidence for training.ensemble)")
    parser.add_argument("--model", type=Path, action="append", required=True, help="repeat for an ensemble")
    parser.add_argument("--variants", nargs="+", default=["clean", "telephone"], choices=["clean", "telephone"])
    parser.add_argument("--hop", type=float, default=None, help="cut windows at this hop in seconds instead of the model's")
    parser.add_argument("--test-time", nargs="+", default=[], choices=TEST_TIME_VIEWS,
                        help="also average each clip's outputs over these views of it (costs a network pass per window each)")
    parser.add_argument("--out", type=output_file(".json", make_folders=True), default=None, help="also write the report here (evidence for training.ensemble)")
    args = parser.parse_args(argv)
    if args.actors is not None and (repeated := sorted({actor for actor in args.actors if args.actors.count(actor) > 1})):  # counted twice in the report's evidence
        parser.error(f"argument --actors: {' '.join(map(str, repeated))} given more than once; give each actor once")
    try:
        models = [EmotionModel(path, provider="cpu") for path in args.model]
        check_members_agree([model.metadata for model in models], args.model)  # one set of windows feeds them all
        clips, _ = scan(args.data)
        if args.actors is not None:
            require_actors(args.data, clips, args.actors)  # an actor without clips once scored the others under a report naming it
            held_out = [clip for clip in clips if clip.actor in args.actors]
        else:
            held_out = random_split_test_clips(clips, args.random_split, models, args.model)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    window = models[0].metadata.window
    if args.hop is not None:  # to measure what a finer or coarser hop than the model's buys
        try:
            window = replace(window, hop_seconds=args.hop)
        except SerStreamError as error:
            parser.error(f"--hop {args.hop}: {error}")
    for path, model in zip(args.model, models):  # a score on speakers the model learnt from is not held-out evidence
        if heard := sorted(set(args.actors or ()) & set(heard_actors(model.metadata.metrics))):
            parser.exit(2, f"{parser.prog}: error: --actors {' '.join(map(str, heard))}: {shown(path)} was trained or validated on actor(s) {', '.join(map(str, heard))}; score it on actors it has not heard\n")
    result: dict[str, object] = {
        "models": [str(p) for p in args.model], "recipes": [model.metadata.recipe for model in models],
        # how each model was trained, which training.ensemble checks against its members
        "trainings": [{key: model.metadata.metrics.get(key) for key in ("training", "weights")} for model in models],
        **({"actors": args.actors} if args.actors is not None else {"random_split_seed": args.random_split}), "clips": len(held_out),
        "window_seconds": window.window_seconds, "hop_seconds": window.hop_seconds,  # training.ensemble holds both to its members
    }
    if args.test_time:
        result["test_time_views"] = args.test_time
    skipped: list[str] = []
    scored = 0
    try:
        for variant in args.variants:
            result[variant], result[f"{variant}_by_actor"], clip_outputs = score(models, held_out, window, variant, tuple(args.test_time), skipped)
            result[f"{variant}_clips"], scored = clip_outputs, len(clip_outputs)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if skipped:
        result["clips"] = scored  # those scored
        result["skipped_clips"] = skipped
    print(json.dumps({key: value for key, value in result.items() if not key.endswith("_clips")}))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
