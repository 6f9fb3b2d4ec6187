"""Several exported models → one ONNX file whose output is the mean of theirs.

Networks trained apart make different mistakes on a voice they have never
heard; the mean of their softmax outputs is the paper's own rule (it already
averages windows), applied across models. The merged file keeps the runtime
contract (input ``spectrogram``, output ``probabilities``) and the members'
feature parameters and window, so nothing downstream changes except the cost
per window, which grows with the number of members (docs/benchmarks.md).

    python -m training.ensemble runs/a/all/model.onnx runs/b/all/model.onnx --to models/ser_cnn.onnx \\
        --evidence runs/ensemble-fold0.json runs/ensemble-fold1.json

Evidence files are ``python -m training.score --out`` reports of the same
members' fold models scored together on held-out actors.

    python -m training.ensemble models/ser_cnn.onnx --unpack runs/shipped-members

writes each member of an ensemble back out as a model of its own (graph and
metadata), so a shipped ensemble can be regrown or cut down when the runs that
made its members are gone.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
from numpy.typing import NDArray
from onnx import helper

from ser_stream.cli import OneLineParser
from ser_stream.errors import ModelError, SerStreamError, shown
from ser_stream.model import (
    DEFAULT_MODEL,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelMetadata,
    file_sha256,
    metadata_path,
)
from training.contract import (
    check_metadata_writable,
    load_checked_model,
    model_output,
    put_in_place,
    record_trained_contract,
)
from training.reports import ReportError, is_number, read_json, require_keys
from training.ship import check_same_training

PARITY_BOUND = 1e-5


def merge_onnx(protos: list[onnx.ModelProto], out: Path, window_seconds: float) -> None:
    """Write one ONNX graph that feeds ``spectrogram`` to every member and outputs the mean of their outputs
    (and records the contract they were trained on: every member's window is ``window_seconds``)."""
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    outputs: list[str] = []
    opsets: dict[str, int] = {}
    first = protos[0]
    for index, proto in enumerate(protos):
        for opset in proto.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        prefixed = onnx.compose.add_prefix(proto, f"member{index}/")
        graph = prefixed.graph
        own_input = graph.input[0].name
        for node in graph.node:
            node.input[:] = [INPUT_NAME if name == own_input else name for name in node.input]
        nodes += graph.node
        initializers += graph.initializer
        outputs.append(graph.output[0].name)
    nodes.append(helper.make_node("Mean", outputs, [OUTPUT_NAME], name="ensemble_mean"))
    graph = helper.make_graph(
        nodes, "ser_ensemble", [first.graph.input[0]], [first.graph.output[0]], initializer=initializers
    )
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    merged.ir_version = first.ir_version
    record_trained_contract(merged, window_seconds)
    onnx.checker.check_model(merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(out))


def unpack(ensemble: Path, folder: Path) -> list[Path]:
    """Write each member of ``ensemble`` to ``folder/member<i>.onnx`` with its metadata; the files, in order.

    A member is the part of the merged graph that computes one input of its
    final ``Mean``; its metadata is the ensemble's with the member's own recipe,
    protocol and evaluations (from the ensemble's metadata), and where it came
    from. The members are written aside and moved into ``folder`` only once
    their mean matches the ensemble's output.
    """
    metadata, proto = load_checked_model(ensemble)  # the window stamped into each member is the network's, not a JSON's
    listed = metadata.metrics.get("members")
    final = [node for node in proto.graph.node if node.op_type == "Mean" and list(node.output) == [OUTPUT_NAME]]
    if not final or not isinstance(listed, list) or len(listed) != len(final[0].input):
        raise ModelError(f"{shown(ensemble)}: not an ensemble written by training.ensemble (no final mean over its listed members)")
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"--unpack {shown(folder)}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=folder))
    except OSError as error:
        raise ModelError(f"--unpack {shown(folder)}: cannot write there ({error.strerror or type(error).__name__})") from None
    for output in final[0].input:  # each member's output is typed as the ensemble's, so the extractor knows it
        typed = proto.graph.value_info.add()
        typed.CopyFrom(proto.graph.output[0])
        typed.name = output
    try:
        staged = []
        for index, (output, summary) in enumerate(zip(final[0].input, listed)):
            member = onnx.utils.Extractor(proto).extract_model([INPUT_NAME], [output])
            for node in member.graph.node:
                node.output[:] = [OUTPUT_NAME if name == output else name for name in node.output]
            member.graph.output[0].name = OUTPUT_NAME
            record_trained_contract(member, metadata.window_seconds)
            onnx.checker.check_model(member)
            path = staging / f"member{index}.onnx"
            onnx.save(member, str(path))
            own = {key: value for key, value in summary.items() if key not in ("file", "sha256", "recipe", "protocol")}
            origin = {"ensemble": str(ensemble), "ensemble_sha256": metadata.sha256, "member": index, "file": summary.get("file"), "sha256": summary.get("sha256")}
            member_metadata = replace(
                metadata,
                sha256=file_sha256(path),
                recipe=str(summary.get("recipe", "")),
                protocol=str(summary.get("protocol", "")),
                metrics={**own, "unpacked_from": origin},
            )
            metadata_path(path).write_text(member_metadata.to_json())
            staged.append(path)
        difference = ensemble_parity(staged, ensemble, demo_inputs())
        if not difference <= PARITY_BOUND:  # NaN too
            raise ModelError(f"{shown(ensemble)}: its unpacked members' mean differs from it by {difference:.2e} (bound {PARITY_BOUND:.0e})")
        written = [folder / path.name for path in staged]
        for to in written:  # every member's place is checked before any moves in
            check_metadata_writable(to)
        for path, to in zip(staged, written):
            put_in_place(path, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def check_members_agree(metadata: list[ModelMetadata], paths: list[Path]) -> None:
    """Members must cut and render windows the same way, or their mean means nothing."""
    reference = metadata[0]
    for path, member in zip(paths[1:], metadata[1:]):
        if member.window != reference.window:
            raise ModelError(
                f"{path}: window {member.window_seconds} s / hop {member.hop_seconds} s differs from "
                f"{paths[0]}'s {reference.window_seconds} s / {reference.hop_seconds} s; an ensemble needs one window"
            )


def check_scored_like_members(path: Path, report: dict[str, Any], metadata: list[ModelMetadata]) -> None:
    """Refuse a report whose models were trained otherwise (epochs, windows per clip, kept weights…) than every member,
    as ``training.ship`` refuses such evidence, or whose networks' model seeds are not the members'; reports before they
    recorded it are taken unchecked."""
    trainings, recipes = report.get("trainings"), report.get("recipes")
    if not isinstance(trainings, list) or not isinstance(recipes, list):
        return
    for recipe, training in zip(recipes, trainings):
        scored = {"recipe": recipe, **(training if isinstance(training, dict) else {})}
        refusals = []
        for member in metadata:  # in any order: a scored model needs a member trained as it was
            try:
                check_same_training(path, scored, member)
                break
            except ReportError as refusal:
                refusals.append(refusal)
        else:
            raise refusals[0]
    # Matched one by one, two reports' networks of seeds 0 and 2 once passed for members of seeds 0 and 1: the seeds
    # must be the members' as a multiset (reports and members before the model seed was recorded are taken unchecked).
    scored_seeds = [(training.get("training") or {}).get("model_seed") if isinstance(training, dict) else None for training in trainings]
    member_seeds = [(member.metrics.get("training") or {}).get("model_seed") for member in metadata]
    if None not in scored_seeds + member_seeds and sorted(map(str, scored_seeds)) != sorted(map(str, member_seeds)):
        raise ModelError(
            f"{path}: scores networks of model seeds {', '.join(map(str, scored_seeds))}, the ensemble's members are of model seeds "
            f"{', '.join(map(str, member_seeds))}; give evidence of the members' own fold networks scored together"
        )


def member_summary(path: Path, metadata: ModelMetadata) -> dict[str, Any]:
    metrics = metadata.metrics
    return {
        "file": str(path),
        "sha256": metadata.sha256,
        "recipe": metadata.recipe,
        "protocol": metadata.protocol,
        **{key: metrics[key] for key in ("split", "epochs_run", "training", "weights", "test_clips_sha256", "held_out_evaluations", "unpacked_from") if key in metrics},
    }


def ensemble_parity(members: list[Path], merged: Path, inputs: NDArray[np.float32]) -> float:
    """Largest difference between the merged file and the mean of its members run one by one."""
    from ser_stream.inference import EmotionModel

    expected = np.mean([EmotionModel(path, provider="cpu").predict(inputs) for path in members], axis=0)
    actual = EmotionModel(merged, provider="cpu").predict(inputs)
    return float(np.max(np.abs(actual - expected)))


def demo_inputs() -> NDArray[np.float32]:
    """Real speech windows (the bundled demo recording) for the parity check."""
    from ser_stream.audiofile import read_audio
    from ser_stream.cli import DEMO_RECORDING
    from ser_stream.clips import clip_spectrograms
    from ser_stream.windows import WindowConfig

    return clip_spectrograms(*read_audio(DEMO_RECORDING), WindowConfig())[:16]


def build(members: list[Path], to: Path, evidence: list[Path]) -> ModelMetadata:
    """Merge ``members`` into ``to`` with metadata naming each member and the ensemble's held-out scores."""
    if len(members) < 2:
        raise ModelError("an ensemble needs at least two member models")
    overwritten = next((member for member in members if member.resolve() == to.resolve()), None)
    if overwritten is not None:
        raise ModelError(f"--to {shown(to)}: is the member {shown(overwritten)}; the ensemble needs a file of its own")
    loaded = [load_checked_model(path) for path in members]  # every member parses and agrees with its metadata first
    metadata, protos = [member for member, _ in loaded], [proto for _, proto in loaded]
    check_members_agree(metadata, members)
    first_with: dict[str, Path] = {}
    for path, member in zip(members, metadata):  # the same network twice is one network weighted double, not two
        if member.sha256 in first_with:
            raise ModelError(f"{shown(path)}: the same network as {shown(first_with[member.sha256])} (sha256 {member.sha256[:12]}…); give each member once")
        first_with[member.sha256] = path
    held_out: dict[str, Any] = {}
    evidence_files: dict[str, Path] = {}  # held-out actors → the report that scored them
    scored_by: dict[int, Path] = {}  # each held-out actor → the report that scored it
    for path in evidence:
        what = "a training.score report"
        report = read_json(path, what)
        if isinstance(report, dict) and "random_split_seed" in report:
            raise ReportError(f"{shown(path)}: scores a random split of clips, whose speakers the models heard in training: "
                              "no evidence of new voices; score the members on held-out actors (training.score --actors)")
        report = require_keys(report, path, what, ("models", "actors", "clean"))
        if "test_time_views" in report:
            raise ReportError(
                f"{shown(path)}: scored with test-time views ({', '.join(map(str, report['test_time_views']))}), which the merged "
                "graph does not compute; score the members without --test-time"
            )
        scored, actors, clean = report["models"], report["actors"], report["clean"]
        if not isinstance(scored, list) or not isinstance(actors, list) or not all(isinstance(actor, int) for actor in actors):
            raise ReportError(f"{shown(path)}: not a training.score report ('models' and 'actors' are not lists of model files and actor numbers)")
        if repeated := sorted({actor for actor in actors if actors.count(actor) > 1}):
            raise ReportError(f"{shown(path)}: lists actor(s) {', '.join(f'{actor:02d}' for actor in repeated)} more than once; score each actor once")
        if len(scored) != len(members):
            raise ModelError(f"{path}: scores {len(scored)} model(s), the ensemble has {len(members)}")
        recipes = report.get("recipes")  # reports before the seventh session record none
        if isinstance(recipes, list) and sorted(map(str, recipes)) != sorted(m.recipe for m in metadata):
            raise ModelError(f"{path}: scores recipes {', '.join(map(str, recipes))}; the ensemble's members are {', '.join(m.recipe for m in metadata)}")
        check_scored_like_members(path, report, metadata)
        hop = report.get("hop_seconds", metadata[0].hop_seconds)
        if hop != metadata[0].hop_seconds:
            raise ModelError(f"{path}: scored windows at a {hop} s hop, the ensemble cuts them at {metadata[0].hop_seconds} s")
        window = report.get("window_seconds")
        if not is_number(window):  # reports before they recorded it: the window they were scored on is unknown
            raise ReportError(f"{shown(path)}: records no window_seconds, so what it scored is unknown; score the members again with training.score --out")
        if window != metadata[0].window_seconds:
            raise ModelError(f"{path}: scored {window} s windows, the ensemble's members cut {metadata[0].window_seconds} s; give evidence of networks of their window")
        name = "actors-" + "-".join(f"{actor:02d}" for actor in sorted(actors))  # the same actors in another order are the same set
        if name in evidence_files:
            raise ReportError(f"{shown(path)}: scores the same actors ({name}) as {shown(evidence_files[name])}; give each held-out set once")
        if shared := sorted(set(actors) & set(scored_by)):  # an actor in two sets would count twice in the evidence
            raise ReportError(
                f"{shown(path)}: scores actor(s) {', '.join(f'{actor:02d}' for actor in shared)}, which {shown(scored_by[shared[0]])} "
                "scores too; give held-out sets that share no actor"
            )
        evidence_files[name] = path
        scored_by.update(dict.fromkeys(actors, path))
        held_out[name] = {"models": scored, "test_clean": clean, **({"test_telephone": report["telephone"]} if "telephone" in report else {})}
    merged_tmp = to.with_name(to.stem + ".merging.onnx")
    try:  # written aside and moved into place whole, once its parity holds: a failure leaves what --to held as it was
        merge_onnx(protos, merged_tmp, metadata[0].window_seconds)
        result = replace(
            metadata[0],
            sha256=file_sha256(merged_tmp),
            recipe="ensemble: " + " + ".join(m.recipe for m in metadata),
            protocol=metadata[0].protocol if len({m.protocol for m in metadata}) == 1 else "mixed",
            metrics={"members": [member_summary(p, m) for p, m in zip(members, metadata)], "held_out_evaluations": held_out},
        )
        metadata_path(merged_tmp).write_text(result.to_json())
        difference = ensemble_parity(members, merged_tmp, demo_inputs())
        if not difference <= PARITY_BOUND:  # NaN too
            raise ModelError(f"{to}: the merged graph differs from the mean of its members by {difference:.2e} (bound {PARITY_BOUND:.0e})")
        result = replace(result, metrics=dict(result.metrics, ensemble_parity_max_abs_diff=difference))
        metadata_path(merged_tmp).write_text(result.to_json())
        put_in_place(merged_tmp, to)
    finally:
        merged_tmp.unlink(missing_ok=True)
        metadata_path(merged_tmp).unlink(missing_ok=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("members", type=Path, nargs="+", help="member model.onnx files (each with its metadata)")
    parser.add_argument("--to", type=model_output, default=str(DEFAULT_MODEL), help="its metadata is written beside it as .json")
    parser.add_argument("--evidence", type=Path, nargs="*", default=[], help="training.score --out reports of the members' fold models together")
    parser.add_argument("--unpack", type=Path, metavar="FOLDER", default=None, help="instead: write each member of the one ensemble given into FOLDER")
    args = parser.parse_args(argv)
    if args.unpack is not None:
        if len(args.members) != 1 or args.evidence:
            parser.error("--unpack takes one ensemble and no --evidence")
        try:
            written = unpack(args.members[0], args.unpack)
        except SerStreamError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        print(f"wrote {len(written)} members of {args.members[0]} to {args.unpack}: {', '.join(p.name for p in written)}")
        return 0
    try:
        result = build(args.members, args.to, args.evidence)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(
        f"wrote {args.to} ({result.sha256[:12]}…): mean of {len(args.members)} models, "
        f"parity {result.metrics['ensemble_parity_max_abs_diff']:.1e}, {len(result.metrics['held_out_evaluations'])} held-out evaluation(s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
