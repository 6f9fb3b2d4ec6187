"""Smoke run of the benchmark suite, so it cannot rot (its figures go to docs/, never into assertions here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import BEGIN, END
from ser_stream.g711 import G711_PACKET_SAMPLES
from tests.conftest import refusal


@pytest.mark.slow
def test_the_suite_runs_every_part_and_rewrites_only_its_own_section(shipped_model, ravdess, tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\nhand-written analysis above\n\n{BEGIN}\nold figures\n{END}\n\nand below\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--model", str(shipped_model), "--held-out-actors", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "hand-written analysis above" in text and "and below" in text and "old figures" not in text
    for row in ("features, ms per 2 s window", "inference fp32, ms per window, batch 32", "inference int8",
                "real-time factor", "concurrent real-time 8 kHz calls", "peak resident memory", "image path"):
        assert row in text, row
    # the shipped model was trained on every actor: actor 1 is not reported as held out
    assert "held-out" not in text and "the model heard them in training" in text
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["held_out"] is False
    assert set(figures["components"]) >= {"features_scipy_8k_ms", "features_paper_image_ms", "onnx_batch1_ms_per_window"}
    assert figures["int8"]["clips"] == 60 and set(figures["int8"]["ms_per_window_batch32"]) == {"fp32", "int8", "speedup"}
    assert figures["fast"]["clips"] == 1 and figures["realtime"]["clips"] == 1 and figures["realtime"]["pace"] == "realtime"
    # one load of 2 calls, whatever its verdict on a busy machine; every figure of the ladder's table is there
    [load] = figures["capacity"]
    assert load["calls"] == 2 and isinstance(load["sustained"], bool)
    assert set(load) >= {"clips_played", "clips_reported_once", "clips_missing", "clips_duplicated", "rtp_late_packets",
                         "rtp_refused_packets", "refused_streams", "calls_not_one_stream", "monitor_cpu_cores", "monitor_peak_rss_mb"}
    assert not list(scratch.glob("ser_stream_*"))  # its scratch files (audio, int8 model) went with its temporary folders


@pytest.mark.slow
def test_two_models_are_timed_side_by_side_with_ratios_to_the_first(shipped_model, tmp_path, capsys):
    from benchmarks.compare_models import main as compare_main

    copy = tmp_path / "copy.onnx"
    copy.write_bytes(shipped_model.read_bytes())
    copy.with_suffix(".json").write_bytes(shipped_model.with_suffix(".json").read_bytes())
    assert compare_main([str(shipped_model), str(copy), "--rounds", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["batch"] for line in lines] == [1, 32]
    for line in lines:
        assert set(line["ms_per_window_median"]) == set(line["ratio_to_first"]) == {str(shipped_model), str(copy)}


def test_comparing_needs_two_models(shipped_model, capsys):
    from benchmarks.compare_models import main as compare_main

    with pytest.raises(SystemExit) as stopped:
        compare_main([str(shipped_model)])
    assert stopped.value.code == 2 and "at least two models" in capsys.readouterr().err


@pytest.mark.parametrize("out, reason", [("figures.json", "not a .wav file to write"), ("/no/such/folder/calls.wav", "no folder")])
def test_the_calls_audio_path_is_checked_before_anything_is_timed(shipped_model, capsys, out, reason):
    from benchmarks.compare_models import main as compare_main

    with pytest.raises(SystemExit) as stopped:
        compare_main([str(shipped_model), str(shipped_model), "--calls", "2", "--out", out])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and reason in error and "Traceback" not in error


def test_vad_coverage_counts_the_clips_the_voice_detector_would_pass_over(tmp_path, capsys):
    import numpy as np
    import soundfile

    from benchmarks.vad_coverage import main as coverage_main
    from ser_stream.cli import DEMO_RECORDING

    speech, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    folder = tmp_path / "Actor_01"
    folder.mkdir()
    soundfile.write(folder / "03-01-01-01-01-01-01.wav", speech[int(0.4 * rate) : int(6.3 * rate)], rate)  # the demo's first utterance
    roar = 0.3 * np.random.default_rng(0).standard_normal(3 * rate).astype(np.float32)  # loud, and no voice in it
    soundfile.write(folder / "03-01-05-02-01-01-01.wav", roar, rate)
    assert coverage_main(["--data", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "wideband, Silero alone: 1 of 2 clips have under 0.25 s of speech"
    assert lines[1] == "  by emotion/intensity: angry/strong 1" and lines[2] == "  by actor: 01: 1"
    assert lines[3] == "wideband, with WebRTC's second opinion from a Silero score of 0.2 (the monitor's rule): 1 of 2 clips have under 0.25 s of speech (no utterance in the monitor)"
    assert lines[6].startswith("telephone, Silero alone: 1 of 2 clips") and lines[9].startswith("telephone, with WebRTC's second opinion")


def test_speech_check_counts_the_clips_classify_says_hold_no_speech_as_they_are_quieter_on_one_channel_and_not_speech(shipped_model, tmp_path, capsys):
    import numpy as np
    import soundfile

    from benchmarks.speech_check import main as check_main
    from ser_stream.cli import DEMO_RECORDING

    speech, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    folder = tmp_path / "Actor_01"
    folder.mkdir()
    soundfile.write(folder / "03-01-01-01-01-01-01.wav", speech[int(1.4 * rate) : int(3.9 * rate)], rate)
    roar = 0.3 * np.random.default_rng(0).standard_normal(3 * rate).astype(np.float32)  # loud, and no voice in it
    soundfile.write(folder / "03-01-05-02-01-01-01.wav", roar, rate)
    assert check_main(["--data", str(tmp_path), "--model", str(shipped_model), "--every", "1", "--quieter", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["as they are (2): no speech heard 1, most windows without speech 0, refused 0", "  no speech heard: 03-01-05-02-01-01-01"]
    assert lines[2:4] == ["30 dB quieter (2): no speech heard 1, most windows without speech 0, refused 0", "  no speech heard: 03-01-05-02-01-01-01_30dB"]
    assert lines[4] == "on one channel of a stereo file (2): no speech heard 1, most windows without speech 0, refused 0"
    assert lines[6] == "not speech (12): no speech heard 12, most windows without speech 0, refused 0"  # a chord's onset was speech
    assert lines[-1].startswith("median classify_file of a clip as it is: ")


def test_utterance_ends_plays_every_clip_with_each_hold_level_and_voice_floor_side_by_side_and_holding_less_never_closes_later(ravdess, capsys):
    from benchmarks.utterance_ends import main as ends_main

    assert ends_main(["--data", str(ravdess), "--actors", "3", "--per-actor", "3", "--hold-db", "inf", "35", "--voice-floor", "off", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 clips of actors 3, ")
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith(("| inf ", "| 35 "))]
    chains = ("wideband, 50 ms blocks", "G.711 μ-law, 20 ms packets")
    assert [tuple(row[:3]) for row in rows] == [(level, floor, chain) for level in ("inf", "35") for floor in ("off", "0.2") for chain in chains]
    for row in rows:
        assert sum(map(int, row[3].split(" / "))) == 3  # every clip end reported once, missing or twice
    lag = {tuple(row[:3]): [float(ms) for ms in row[5].split(" / ")] for row in rows}
    for floor in ("off", "0.2"):
        for chain in chains:
            assert lag[("35", floor, chain)][1] <= lag[("inf", floor, chain)][1]


def test_stream_onsets_starts_each_clips_stream_from_each_point_and_counts_utterances_started_on_sound_that_is_not_speech(ravdess, capsys):
    from benchmarks.stream_onsets import CHAINS, CONDITIONS
    from benchmarks.stream_onsets import main as onsets_main

    assert onsets_main(["--data", str(ravdess), "--actors", "3", "--per-actor", "2", "--draws", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 clips of actors 3"
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and not line.startswith("| stream starts")]
    speech, sounds = rows[: len(CONDITIONS) * len(CHAINS)], rows[len(CONDITIONS) * len(CHAINS) + 1 :]  # a heading between
    assert [tuple(row[:2]) for row in speech] == [(condition, chain) for condition in CONDITIONS for chain in CHAINS]
    for row in speech:
        heard, whole = map(int, row[2].removesuffix(" of 2").split(" / "))
        covered, spoken = map(float, row[3].split(" of "))
        assert whole <= heard <= 2 and covered <= spoken
    assert speech[0][2] == "2 / 2 of 2"  # after its own room tone (the control), each clip's speech is an utterance
    assert [row[0] for row in sounds[::2]] == ["its room tone (each clip's, 3 s)"] + [
        f"{name}, -50 to -10 dBFS" for name in ("hum", "chord", "clicks", "siren", "white noise", "brown noise")]
    for row in sounds:
        streams = 2 if row[0].startswith("its room tone") else 5
        assert all(0 <= int(count) <= streams for count in row[2].removesuffix(f" of {streams}").split(" / "))



def test_stream_onsets_counts_utterances_over_the_speech_whole_at_90_percent_and_those_outside_it_apart():
    from benchmarks.stream_onsets import Tally
    from ser_stream.features import SAMPLE_RATE as RATE

    tally = Tally()
    # speech at 1 to 2 s: one utterance over its last 0.95 s, one before it, one after
    tally.add([(int(1.05 * RATE), int(2.1 * RATE), 4), (0, RATE // 2, 1), (3 * RATE, 4 * RATE, 1)], first=RATE, last=2 * RATE)
    assert (tally.clips, tally.heard, tally.whole, tally.windows, tally.other) == (1, 1, 1, 4, 2)
    assert (tally.speech, tally.covered) == (1.0, 0.95)
    tally.add([(RATE, int(1.5 * RATE), 2)], first=RATE, last=2 * RATE)  # half of it: heard, not whole
    assert (tally.clips, tally.heard, tally.whole, tally.other) == (2, 2, 1, 2)


def test_stream_onsets_each_condition_says_where_the_clips_speech_lies_in_its_stream():
    from benchmarks.stream_onsets import CONDITIONS, ZEROS_SECONDS, condition_stream
    from benchmarks.utterance_ends import Clip
    from ser_stream.features import SAMPLE_RATE

    audio = np.arange(4 * SAMPLE_RATE, dtype=np.float32)
    clip = Clip(audio, first=SAMPLE_RATE, last=3 * SAMPLE_RATE, tone=np.zeros(160, np.float32))
    for condition in CONDITIONS:
        stream, first, last = condition_stream(clip, condition)
        skipped = {"+0.2 s": 0.2, "+0.5 s": 0.5}.get(condition, 0.0)
        assert np.array_equal(stream[first:last], audio[clip.first + int(skipped * SAMPLE_RATE) : clip.last]), condition
        assert first == (int(ZEROS_SECONDS * SAMPLE_RATE) if condition == "zeros" else clip.first if condition == "room tone" else 0)


def test_utterance_ends_refuses_a_hold_level_of_0_db(capsys):
    line = refusal("benchmarks.utterance_ends", ["--hold-db", "0"], capsys)
    assert line.endswith("argument --hold-db: 0 is not a level above 0 dB (or inf)")


def test_dc_offset_plays_each_clip_with_each_offset_and_a_constant_one_changes_no_utterance_and_no_label(ravdess, shipped_model, capsys):
    from benchmarks.dc_offset import OFFSETS
    from benchmarks.dc_offset import main as offset_main

    assert offset_main(["--data", str(ravdess), "--actors", "3", "--per-actor", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 clips of actors 3, at 0.8, 16-bit; the offset taken off (DC blocker)"
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and not line.startswith("| offset")]
    assert [row[0] for row in rows] == list(OFFSETS)
    for row in rows:
        if not row[0].startswith(("0 to", "0.03 ±")):  # a constant offset: none of the clips' utterances or labels change
            assert row[1] == "0" and row[2].startswith("0 of "), row
    assert lines[-1].startswith("classify's network inputs for the clips as recorded, through the blocker: ")
    assert offset_main(["--data", str(ravdess), "--actors", "3", "--per-actor", "1", "--without-blocker"]) == 0
    assert capsys.readouterr().out.startswith("1 clip of actors 3, at 0.8, 16-bit; the offset left in\n")


def test_unread_subscriber_finds_what_a_subscriber_that_stops_reading_took_before_its_first_counted_drop():
    import asyncio

    from benchmarks.unread_subscriber import before_and_now

    # as fast as the loop goes: its buffers fill first
    before, now = asyncio.run(before_and_now(rate=1e6, seconds=60, queue_size=512))
    for taken, how in ((before, "socket uncapped (before)"), (now, "socket capped at 128 KiB unsent")):
        assert taken.dropped == 1 and taken.queued == 512
        assert taken.unread == taken.published - 512 > 0 and str(taken).startswith(f"{how}, --subscriber-queue 512: ")
        assert "handed to the connection unread" in str(taken)


def test_unread_subscriber_through_a_relay_finds_the_proxys_buffers_take_what_the_monitors_socket_does_not():
    """The monitor's cap bounds what a subscriber connected to it takes unread; behind a reverse proxy the proxy's
    buffers take the rest (a review of 8e125e5, r16: ~19,000 window messages, 4.4 MB, through a TCP relay)."""
    import asyncio

    from benchmarks.unread_subscriber import direct_and_relayed

    direct, relayed = asyncio.run(direct_and_relayed(rate=1e6, seconds=60, queue_size=512, relay_send_buffer=None))
    assert direct.dropped == relayed.dropped == 1 and direct.queued == relayed.queued == 512
    assert str(relayed).startswith("through a TCP relay with the system's buffers, socket capped at 128 KiB unsent, --subscriber-queue 512: ")
    assert relayed.unread > 2 * direct.unread  # (a cut-off subscriber loses these uncounted: docs/protocol.md says so)

# --- alternation: every round runs each contender once, in turn ------------------------------------------------


def test_component_timings_alternate_round_by_round():
    from benchmarks.components import alternate_ms

    calls: list[str] = []
    timings = alternate_ms({name: (lambda name=name: calls.append(name), 1) for name in "abc"}, rounds=3)
    assert calls == list("abc") * 4  # one warm-up round, then three rounds, each running a, b, c in turn
    assert set(timings) == set("abc")


def test_a_contenders_timing_is_the_median_and_95th_percentile_of_its_rounds_in_ms_per_window(monkeypatch):
    """On a clock only the contender moves: its warm-up call left out, each call's time divided by the windows it ran."""
    import types

    import training.timing

    clock = [0.0]
    monkeypatch.setattr(training.timing, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    ms_per_window = iter([1000.0] + [1.0] * 10 + [2.0] * 9 + [50.0])  # the warm-up call's first

    def batch_of_4() -> None:
        clock[0] += next(ms_per_window) * 4 / 1000

    # 1.5: between the tenth and eleventh of twenty; 4.4: 5 % of the way from the 19th (2) to the 20th (50)
    assert training.timing.alternate_ms({"model": (batch_of_4, 4)}, rounds=20) == {"model": {"median": 1.5, "p95": 4.4}}


def test_compared_models_alternate_round_by_round():
    from benchmarks.compare_models import inference_ms

    calls: list[str] = []

    class Recording:
        def __init__(self, path: str) -> None:
            self.path = path

        def predict(self, inputs):
            calls.append(self.path)

    inference_ms([Recording("one"), Recording("two")], batch=1, rounds=3)  # type: ignore[list-item]
    assert calls == ["one", "two"] * 4


def test_int8_and_fp32_alternate_round_by_round():
    import numpy as np

    from training.quantize import speed_ms

    calls: list[str] = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def get_inputs(self):
            return [type("Input", (), {"name": "spectrogram"})()]

        def run(self, outputs, feeds):
            calls.append(self.name)

    speed_ms({"fp32": Session("fp32"), "int8": Session("int8")}, np.zeros((2, 260, 270), np.float32), 1, 3)  # type: ignore[dict-item]
    assert calls == ["fp32", "int8"] * 4


def test_the_components_ratios_are_the_slower_path_over_ours(shipped_model, monkeypatch, capsys):
    import benchmarks.components as components

    medians = {"features_scipy_8k_ms": 0.5, "features_scipy_16k_ms": 0.8, "features_paper_image_ms": 20.0,
               "onnx_batch1_ms_per_window": 1.0, "onnx_batch32_ms_per_window": 0.5}
    monkeypatch.setattr(components, "alternate_ms", lambda contenders, rounds: {name: {"median": medians[name], "p95": medians[name]} for name in contenders})
    assert components.main(["--model", str(shipped_model), "--repeats", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ratio_paper_image_to_scipy"] == 25.0  # 20 ms from 16 kHz against 0.8


def test_the_components_time_a_batch_of_32_per_window(shipped_model, monkeypatch, capsys):
    """Every call takes 32 ms on this clock: 32 ms a window at batch 1, 1 ms a window at batch 32."""
    import benchmarks.components as components
    import training.timing as timing

    clock = {"now": 0.0}

    def perf_counter() -> float:
        clock["now"] += 0.032  # each read 32 ms after the one before: a call lasts 32 ms
        return clock["now"]

    monkeypatch.setattr(timing, "time", type("Time", (), {"perf_counter": staticmethod(perf_counter)}))
    monkeypatch.setattr(components, "paper_image_features", lambda audio, rate: None)  # not what is measured here
    assert components.main(["--model", str(shipped_model), "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["onnx_batch1_ms_per_window"]["median"] == 32.0 and figures["onnx_batch32_ms_per_window"]["median"] == 1.0


def test_compared_models_ratios_are_each_models_time_over_the_firsts(shipped_model, tmp_path, monkeypatch, capsys):
    import benchmarks.compare_models as compare_models

    copy = tmp_path / "copy.onnx"
    copy.write_bytes(shipped_model.read_bytes())
    copy.with_suffix(".json").write_bytes(shipped_model.with_suffix(".json").read_bytes())
    monkeypatch.setattr(compare_models, "inference_ms", lambda models, batch, rounds: {str(shipped_model): 2.0, str(copy): 3.0})
    assert compare_models.main([str(shipped_model), str(copy), "--rounds", "1"]) == 0
    for line in capsys.readouterr().out.splitlines():
        assert json.loads(line)["ratio_to_first"] == {str(shipped_model): 1.0, str(copy): 1.5}


def test_int8_and_fp32_are_timed_on_batches_of_the_size_asked_for_or_on_every_window_when_there_are_fewer():
    import numpy as np

    from training.quantize import speed_ms

    batches: list[int] = []

    class Session:
        def get_inputs(self):
            return [type("Input", (), {"name": "spectrogram"})()]

        def run(self, outputs, feeds):
            batches.append(len(feeds["spectrogram"]))

    for windows, batch in ((40, 32), (40, 1), (5, 32)):
        batches.clear()
        speed_ms({"fp32": Session()}, np.zeros((windows, 260, 270), np.float32), batch, 2)  # type: ignore[dict-item]
        assert batches == [min(windows, batch)] * 3, (windows, batch)


# --- capacity: what a sustained load is ------------------------------------------------------------------------

CLIPS = [(1.0, 2.0), (3.5, 5.0), (6.0, 8.0), (9.5, 11.0), (12.0, 14.0), (15.5, 17.0)]  # a 20 s call audio with six clips
CALLS, SECONDS, PERIOD_PACKETS = 5, 60.0, 1000
START = 100.0


def played_clip_ends(call: int) -> list[float]:
    """What judge_load counts for a call: the ends of its clips (rotated by the call's offset) played whole."""
    from benchmarks.capacity import MIN_SILENCE

    offset = round(call * PERIOD_PACKETS / CALLS) * G711_PACKET_SAMPLES / 8000
    clips = [(start - offset + 20.0 * k, end - offset + 20.0 * k) for k in range(-1, 5) for start, end in CLIPS]
    return [end for start, end in clips if start >= 0 and end + MIN_SILENCE < SECONDS]


def received_utterance(call: int, t_end: float, true_end: float, latency_s: float) -> dict:
    """An utterance as the capacity benchmark's subscriber records it (not a monitor message, which has no receipt time):
    call ``call``'s, ending at ``t_end``, received ``latency_s`` after the clip's true end and the silence waited for."""
    from benchmarks.capacity import MIN_SILENCE

    return {"type": "utterance", "stream": f"rtp-{call + 1:08x}", "t_end": t_end, "received": START + true_end + MIN_SILENCE + latency_s}


def started(call: int) -> dict:
    return {"type": "stream_started", "stream": f"rtp-{call + 1:08x}"}


CLEAN = {"type": "status", "overruns": 0, "rtp_lost_packets": 0, "rtp_late_packets": 0, "rtp_refused_packets": 0, "refused_streams": 0}
EVERY_CLIP = [(call, end) for call in range(CALLS) for end in played_clip_ends(call)]


def judged(messages: list[dict]) -> dict:
    import numpy as np

    from benchmarks.capacity import judge_load

    return judge_load(CALLS, SECONDS, PERIOD_PACKETS, np.array(CLIPS), START, messages, 250.0)


def test_a_load_with_every_clip_reported_once_and_nothing_lost_is_sustained():
    result = judged([started(c) for c in range(CALLS)] + [received_utterance(c, end + 0.1, end, 0.05) for c, end in EVERY_CLIP] + [CLEAN])
    assert result["sustained"] and result["clips_played"] == result["clips_reported_once"] == len(EVERY_CLIP)
    assert result["latency_ms_median"] == result["latency_ms_p95"] == 50.0


def test_a_clip_never_reported_fails_the_load_and_counts_as_infinitely_late():
    reported = [received_utterance(c, end, end, 0.05) for i, (c, end) in enumerate(EVERY_CLIP) if i % 10 != 9]
    result = judged([started(c) for c in range(CALLS)] + reported + [CLEAN])
    assert not result["sustained"] and result["clips_missing"] == len(EVERY_CLIP) // 10
    assert result["latency_ms_p95"] == float("inf")


def test_a_clip_reported_twice_counts_once_and_fails_the_load():
    twice = [received_utterance(c, end, end, 0.05) for c, end in EVERY_CLIP] + [received_utterance(c, end - 0.25, end, 0.06) for c, end in EVERY_CLIP[:3]]
    result = judged([started(c) for c in range(CALLS)] + twice + [CLEAN])
    assert not result["sustained"] and result["clips_duplicated"] == 3 and result["clips_reported_once"] == len(EVERY_CLIP) - 3


@pytest.mark.parametrize("counter", ["overruns", "rtp_lost_packets", "rtp_late_packets", "rtp_refused_packets", "refused_streams"])
def test_audio_lost_late_or_refused_fails_the_load(counter):
    result = judged([started(c) for c in range(CALLS)] + [received_utterance(c, end, end, 0.05) for c, end in EVERY_CLIP] + [{**CLEAN, counter: 3}])
    assert not result["sustained"] and result[counter] == 3


def test_a_call_closed_and_reopened_fails_the_load():
    result = judged([started(c) for c in range(CALLS)] + [started(2)] + [received_utterance(c, end, end, 0.05) for c, end in EVERY_CLIP] + [CLEAN])
    assert not result["sustained"] and result["calls_not_one_stream"] == 1


def test_late_utterances_count_in_the_p95():
    late = [received_utterance(c, end, end, 0.05 if i % 10 else 0.4) for i, (c, end) in enumerate(EVERY_CLIP)]
    result = judged([started(c) for c in range(CALLS)] + late + [CLEAN])
    assert result["clips_missing"] == 0 and result["latency_ms_p95"] == 400.0 and not result["sustained"]


def test_the_latency_median_is_the_middle_of_the_latencies_and_the_p95_one_of_them():
    """The median was taken as numpy's 'higher' percentile, as the p95 is: 30 ms for [10, 20, 30, 40], where the
    component timings and the docs' 'Medians unless noted' meant 25."""
    from ser_stream.messages import latency_summary

    assert latency_summary([10.0, 20.0, 30.0, 40.0]) == {"median": 25.0, "p95": 40.0}
    assert latency_summary([40.0, 50.0, 10.0]) == {"median": 40.0, "p95": 50.0}
    assert latency_summary([float(ms) for ms in range(1, 101)]) == {"median": 50.5, "p95": 96.0}  # interpolated: 95.05
    assert latency_summary([10.0, float("inf")]) == {"median": float("inf"), "p95": float("inf")}


def test_a_load_too_short_to_play_a_clip_is_not_sustained():
    import math

    import numpy as np

    from benchmarks.capacity import judge_load

    result = judge_load(CALLS, 1.0, PERIOD_PACKETS, np.array(CLIPS), START, [CLEAN], 250.0)
    assert result["clips_played"] == 0 and math.isnan(result["latency_ms_p95"]) and not result["sustained"]


def test_a_packet_leaves_once_its_20_ms_have_been_spoken(monkeypatch):
    import struct

    import benchmarks.capacity as capacity

    clock = {"now": 50.0}
    sent: list[tuple[float, int]] = []

    class Socket:
        def __init__(self, *args):
            pass

        def sendto(self, packet, target):
            sent.append((clock["now"], struct.unpack("!H", packet[2:4])[0]))

        def close(self):
            pass

    fake_time = type("Time", (), {"monotonic": staticmethod(lambda: clock["now"]),
                                  "sleep": staticmethod(lambda seconds: clock.__setitem__("now", clock["now"] + seconds))})
    monkeypatch.setattr(capacity, "time", fake_time)
    monkeypatch.setattr(capacity.socket, "socket", Socket)
    capacity.send_calls(bytes(G711_PACKET_SAMPLES * 100), calls=2, seconds=0.2, port=9, start_at=51.0)
    assert len(sent) == 2 * 10
    assert all(at >= 51.0 + 0.02 * (k + 1) - 1e-9 for at, k in sent)  # packet k holds [20k, 20k + 20) ms of audio


def test_the_ladder_stops_at_the_first_load_not_sustained(monkeypatch, capsys):
    import numpy as np

    import benchmarks.capacity as capacity

    tried: list[int] = []

    def run_load(calls, *args):
        tried.append(calls)
        return {"calls": calls, "sustained": calls < 60}

    monkeypatch.setattr(capacity, "run_load", run_load)
    monkeypatch.setattr(capacity, "call_audio", lambda data, out: (bytes(G711_PACKET_SAMPLES), np.array([(0.5, 1.0)])))
    assert capacity.main(["--calls", "40", "50", "60", "70", "--until-failure"]) == 0
    assert tried == [40, 50, 60]


def test_a_load_whose_p95_latency_is_the_bound_itself_is_not_sustained():
    """Sustained means a p95 under the bound (250 ms here), not at it."""
    result = judged([started(c) for c in range(CALLS)] + [received_utterance(c, end, end, 0.25) for c, end in EVERY_CLIP] + [CLEAN])
    assert result["latency_ms_p95"] == 250.0 and not result["sustained"]


def test_a_call_that_never_started_a_stream_fails_the_load():
    result = judged([started(c) for c in range(CALLS - 1)] + [received_utterance(c, end, end, 0.05) for c, end in EVERY_CLIP] + [CLEAN])
    assert not result["sustained"] and result["calls_not_one_stream"] == 1


def test_a_stream_no_call_sent_and_its_utterances_fail_the_load_and_are_counted():
    stranger = {"type": "utterance", "stream": "rtp-00000063", "t_end": 2.0, "received": START + 3.0}
    result = judged([started(c) for c in range(CALLS)] + [{"type": "stream_started", "stream": "rtp-00000063"}, stranger]
                    + [received_utterance(c, end, end, 0.05) for c, end in EVERY_CLIP] + [CLEAN])
    assert not result["sustained"] and result["streams_not_a_call"] == 1 and result["other_utterances"] == 1


def test_a_call_loops_its_audio_from_its_own_offset():
    """Call 1 (SSRC 2) starts 3 packets into a 4-packet audio and goes round it: packets 3, 0, 1, 2, 3, 0."""
    import struct

    from benchmarks.capacity import call_packet

    codes = b"".join(bytes([k]) * G711_PACKET_SAMPLES for k in range(4))
    packets = [call_packet(codes, 4, 3, tick, 1) for tick in range(6)]
    assert [packet[12:] for packet in packets] == [bytes([k]) * G711_PACKET_SAMPLES for k in (3, 0, 1, 2, 3, 0)]
    assert {struct.unpack("!I", packet[8:12])[0] for packet in packets} == {2}


def test_a_clip_reported_twice_counts_its_latency_from_the_first_report():
    from benchmarks.monitor_e2e import MIN_SILENCE, match_clip_ends

    ends = np.array([2.0, 6.0])
    clips = match_clip_ends(ends, ends, [(2.0, 13.0), (6.1, 17.0), (5.9, 18.0)], zero=10.0)
    assert clips["duplicated"] == 1
    assert [round(ms, 6) for ms in clips["latencies_ms"]] == [round((1.0 - MIN_SILENCE) * 1000, 6), round((1.0 - MIN_SILENCE) * 1000, 6)]


def test_an_utterance_reports_a_clip_end_within_0_3_s_of_it_and_no_further():
    from benchmarks.monitor_e2e import match_clip_ends

    ends = np.array([2.0, 6.0])
    near = match_clip_ends(ends, ends, [(2.25, 13.0), (5.75, 17.0)], zero=10.0)
    assert near["missing"] == 0 and near["other_utterances"] == 0
    far = match_clip_ends(ends, ends, [(2.35, 13.0), (5.65, 17.0)], zero=10.0)
    assert far["missing"] == 2 and far["other_utterances"] == 2


def test_a_clip_whose_closing_silence_the_call_never_played_is_not_counted():
    """The call stops 0.3 s after the second clip's speech, before the VAD's silence could close it: that clip is not
    the monitor's to report, neither missing nor late."""
    import numpy as np

    from benchmarks.capacity import judge_load

    messages = [started(0), received_utterance(0, 0.8, 0.8, 0.05), CLEAN]
    result = judge_load(1, 2.3, PERIOD_PACKETS, np.array([(0.2, 0.8), (1.0, 2.0)]), START, messages, 250.0)
    assert result["clips_played"] == 1 and result["clips_missing"] == 0 and result["sustained"]


# --- rendering the capacity figures ------------------------------------------------------------------------------


def figures(ladder: list[tuple[int, bool]], **realtime) -> dict:
    """A benchmark run's figures with the given ladder of (calls, sustained)."""
    timing = {"median": 1.0, "p95": 1.2}
    load = {"clips_played": 10, "clips_reported_once": 10, "clips_missing": 0, "clips_duplicated": 0, "other_utterances": 0,
            "latency_ms_median": 60.0, "latency_ms_p95": 140.0, "overruns": 0, "rtp_lost_packets": 0, "rtp_late_packets": 0,
            "rtp_refused_packets": 0, "refused_streams": 0, "calls_not_one_stream": 0, "monitor_cpu_cores": 0.7, "monitor_peak_rss_mb": 280.0}
    e2e = {"audio_seconds": 10.0, "processing_seconds": 0.1, "real_time_factor": 100.0, "clips": 2, "utterances": 2,
           "clips_with_exactly_one_utterance": 2, "label_accuracy": 0.5, "latency_ms_median": 90.0, "latency_ms_p95": 120.0,
           "latency_ms_median_timed": 90.0, "latency_ms_p95_timed": 120.0,
           "clips_missing": 0, "clips_duplicated": 0, "worker_ms_median": 5.0, "worker_ms_p95": 9.0, "overruns": 0}
    return {
        "machine": "test", "date": "2026-11-30", "model": "m.onnx", "held_out": True,
        "components": {"features_scipy_8k_ms": timing, "features_scipy_16k_ms": timing, "onnx_batch1_ms_per_window": timing,
                       "onnx_batch32_ms_per_window": timing, "ratio_paper_image_to_scipy": 18.0},
        "int8": {"held_out_actors": [3, 5], "clips": 120, "ms_per_window_batch1": {"fp32": 1.0, "int8": 1.1, "speedup": 0.91},
                 "ms_per_window_batch32": {"fp32": 1.3, "int8": 1.0, "speedup": 1.3},
                 "wideband": {"change_points": -1.0}, "telephone": {"change_points": -1.5}},
        "fast": e2e, "realtime": {**e2e, **realtime},
        "capacity": [{**load, "calls": calls, "sustained": sustained} for calls, sustained in ladder],
    }


def row(table: str, starts: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(starts))


def test_capacity_is_the_highest_load_with_every_lower_load_sustained():
    from benchmarks.__main__ import render

    table = render(figures([(40, True), (50, True), (60, False), (70, True)]))
    assert row(table, "| concurrent real-time 8 kHz calls sustained").split(" | ")[1] == "50"


def test_a_ladder_whose_top_load_passed_shows_its_capacity_as_at_least_that():
    from benchmarks.__main__ import render

    table = render(figures([(40, True), (50, True), (120, True)]))
    assert "| ≥ 120 (largest tried) | ≥ 50 | met |" in row(table, "| concurrent real-time 8 kHz calls sustained")


def test_a_ladder_where_no_load_was_sustained_is_reported_as_missed_not_left_out():
    from benchmarks.__main__ import render

    table = render(figures([(40, False), (50, True)]))
    assert row(table, "| concurrent real-time 8 kHz calls sustained").endswith("| none of the loads tried | ≥ 50 | **missed** |")


def test_without_a_50_call_load_the_50_call_rows_say_not_measured():
    from benchmarks.__main__ import render

    table = render(figures([(40, True), (60, True)]))
    assert row(table, "| end-to-end utterance latency at 50 calls").endswith("| not measured | p95 ≤ 150 | not measured |")
    assert row(table, "| monitor peak resident memory at 50 calls").endswith("| not measured | ≤ 500 at 50 | not measured |")


def test_no_latency_measured_or_a_clip_never_reported_is_a_missed_target():
    from benchmarks.__main__ import render

    table = render(figures([(50, False)], latency_ms_median_timed=float("nan"), latency_ms_p95_timed=float("nan")))
    assert row(table, "| utterance latency, one real-time stream").endswith("| none measured / none measured | p95 ≤ 150 | **missed** (nothing measured) |")
    table = render(figures([(50, True)], latency_ms_p95=float("inf"), clips_missing=1))
    assert row(table, "| the same over all 2 clips (1 without").endswith("| 90.0 / ∞ | | |")
    assert row(table, "| utterance latency, one real-time stream").endswith("the 1 of 2 clips an utterance ended at) | 90.0 / 120.0 | p95 ≤ 150 | met |")
    load = {**figures([(50, True)])["capacity"][0], "latency_ms_p95": float("inf")}
    table = render({**figures([]), "capacity": [load]})
    assert row(table, "| end-to-end utterance latency at 50 calls").endswith("/ ∞ | p95 ≤ 150 | **missed** (a clip without an utterance at its end counts as ∞) |")


def test_actors_are_called_held_out_only_when_the_model_never_heard_them(tmp_path):
    from benchmarks.__main__ import never_heard, render

    fold0 = tmp_path / "model.onnx"
    fold0.with_suffix(".json").write_text(json.dumps({"protocol": "actors", "metrics": {"split": "fold0-actors-03-05-07-20"}}))
    everyone = tmp_path / "all.onnx"
    everyone.with_suffix(".json").write_text(json.dumps({"protocol": "all", "metrics": {}}))
    assert never_heard(fold0) == {3, 5, 7, 20} and never_heard(everyone) == set()
    assert "held-out actors 3, 5" in render(figures([(50, True)]))
    assert "held-out" not in render({**figures([(50, True)]), "held_out": False})


def test_each_measured_figure_is_shown_in_its_own_row():
    """Every figure in its row: the 8 kHz features (the target's) apart from the 16 kHz, each speed-up and accuracy change
    in its place, the Keras baselines as Keras over onnxruntime, the label accuracy in per cent."""
    from benchmarks.__main__ import render

    base = figures([(50, True)])
    components = {**base["components"], "features_scipy_8k_ms": {"median": 1.25, "p95": 1.5}, "features_scipy_16k_ms": {"median": 2.5, "p95": 3.0},
                  "keras_call_batch1_ms_per_window": {"median": 8.0, "p95": 9.0}, "onnx_batch1_ms_per_window": {"median": 1.0, "p95": 1.1},
                  "keras_predict_batch32_ms_per_window": {"median": 6.0, "p95": 7.0}, "onnx_batch32_ms_per_window": {"median": 1.5, "p95": 1.6},
                  "ratio_keras_call_to_onnx_batch1": 8.0}
    table = render({**base, "components": components})
    assert row(table, "| features, ms per 2 s window").split(" | ")[1] == "1.25 (1.50)"
    assert row(table, "| features, ms per window from 16 kHz").split(" | ")[1] == "2.50"
    assert row(table, "| Keras `model(x, training=False)`").endswith("| 8.0× slower (8.0 vs 1.0 ms) |")
    assert row(table, "| Keras `model.predict`").endswith("| 4.0× slower |")
    assert row(table, "| int8 / fp32 speed").endswith("| 0.91× and 1.3× (above 1 = int8 faster) |")
    assert row(table, "| int8 − fp32 mean per-class accuracy").endswith("| -1.00 points wideband, -1.50 telephone |")
    assert "label accuracy 50.0 %" in table


def test_a_figure_at_its_target_meets_it_and_one_that_misses_says_by_what_factor():
    from benchmarks.__main__ import render

    base = figures([(25, True)])  # 25 calls sustained, the largest load tried
    table = render({**base, "int8": {**base["int8"], "ms_per_window_batch32": {"fp32": 4.0, "int8": 3.0, "speedup": 1.33}}})
    assert row(table, "| inference fp32, ms per window, batch 32").endswith("| 4.00 | ≤ 4 | met |")
    assert row(table, "| inference int8, ms per window, batch 32").endswith("| 3.00 | ≤ 2 | **missed** (1.5× off) |")
    assert row(table, "| one stream from a file").endswith("| 100.0× | ≥ 100× | met |")
    assert row(table, "| concurrent real-time 8 kHz calls sustained").endswith("| ≥ 25 (largest tried) | ≥ 50 | **missed** (2.0× off) |")


def test_a_ladder_run_out_of_order_is_judged_from_its_lowest_load_up():
    """``--calls 50 40``: 40 calls were sustained, 50 were not; the capacity is 40, not 'none of the loads tried'."""
    from benchmarks.__main__ import render

    table = render(figures([(50, False), (40, True)]))
    assert row(table, "| concurrent real-time 8 kHz calls sustained").split(" | ")[1] == "40"


def test_rendering_saved_figures_rewrites_only_the_generated_section(tmp_path):
    from benchmarks.__main__ import main as suite_main
    from benchmarks.clients import strict_json

    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\nabove\n\n{BEGIN}\nold figures\n{END}\n\nbelow\n")
    out.with_suffix(".json").write_text(strict_json(figures([(50, True)])))
    assert suite_main(["--render-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(f"# Benchmarks\n\nabove\n\n{BEGIN}\nGenerated by `python -m benchmarks` on 2026-11-30.")
    assert text.endswith(f"\n{END}\n\nbelow\n") and "old figures" not in text


def test_a_file_without_the_markers_keeps_its_text_and_gets_the_section_after_it(tmp_path):
    from benchmarks.__main__ import main as suite_main
    from benchmarks.clients import strict_json

    out = tmp_path / "benchmarks.md"
    out.write_text("# Notes\n\nhand-written\n")
    out.with_suffix(".json").write_text(strict_json(figures([(50, True)])))
    assert suite_main(["--render-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(f"# Notes\n\nhand-written\n\n{BEGIN}\nGenerated by ") and text.endswith(f"\n{END}\n")


def test_matched_clip_ends_take_the_first_utterance_ending_there():
    import numpy as np

    from benchmarks.monitor_e2e import MIN_SILENCE, match_clip_ends

    ends = np.array([2.0, 6.0, 10.0])
    utterances = [(2.1, 10.0 + 2.0 + MIN_SILENCE + 0.08), (4.0, 20.0), (5.8, 30.0), (5.9, 31.0)]  # 4.0: mid-clip; 10.0: none
    clips = match_clip_ends(ends, ends, utterances, zero=10.0)
    assert clips["missing"] == 1 and clips["duplicated"] == 1 and clips["other_utterances"] == 1
    assert round(clips["latencies_ms"][0], 6) == 80.0 and clips["latencies_ms"][2] == float("inf")


# --- a part that fails: its own reason, in one line, at once -----------------------------------------------------


def test_a_monitor_that_refuses_its_options_ends_the_benchmark_at_once_with_its_own_reason(tiny_ravdess, tmp_path, capsys):
    """The monitor's stderr was thrown away: the benchmark waited 30 s for it to listen, then ended in a traceback."""
    line = refusal("benchmarks.monitor_e2e", ["--data", str(tiny_ravdess), "--actors", "1", "--per-actor", "1", "--hop", "0.001",
                                              "--out", str(tmp_path / "clips.wav")], capsys)
    assert line.startswith("python -m benchmarks.monitor_e2e: error: the monitor exited with status 2 before it listened on port ")
    assert "--hop 0.001" in line.split(": ", 3)[3]  # the monitor's own line, naming the option it refused


def test_a_capacity_load_whose_monitor_fails_to_start_raises_its_own_reason(tmp_path):
    """Its stderr was thrown away: a monitor that refused to start meant a 60 s wait, then a traceback."""
    from benchmarks.capacity import run_load
    from benchmarks.monitor_e2e import MonitorFailed

    with pytest.raises(MonitorFailed) as failed:
        run_load(1, 1.0, bytes(160), np.zeros((0, 2)), tmp_path / "missing.onnx", 250.0)
    assert failed.value.status == 2
    assert str(failed.value).startswith("the monitor exited with status 2 before it listened on port ")
    assert str(failed.value).endswith(f"ser-stream: error: {tmp_path / 'missing.onnx'}: model file not found")


def test_a_benchmark_part_that_fails_ends_the_suite_in_one_line_naming_it_and_why(shipped_model, ravdess, tmp_path, capsys):
    """A part's failure was a traceback of the suite's own process, the part's reason a list's repr at its end."""
    from benchmarks.__main__ import main as suite_main

    not_keras = tmp_path / "model.keras"
    not_keras.write_text("not a Keras model")
    with pytest.raises(SystemExit) as stopped:
        suite_main(["--quick", "--model", str(shipped_model), "--keras", str(not_keras), "--data", str(ravdess), "--out", str(tmp_path / "bench.md")])
    error = capsys.readouterr().err
    assert stopped.value.code == 1 and error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith("python -m benchmarks: error: benchmarks.components --model ") and " failed (exit status 1): ValueError: " in error
    assert not (tmp_path / "bench.md").exists()


def test_a_benchmark_part_that_outlasts_its_time_is_stopped_and_named():
    from benchmarks.__main__ import run_json

    with pytest.raises(RuntimeError, match=r"^benchmarks.components --repeats 100000: still running after 1 s; stopped$"):
        run_json(["benchmarks.components", "--repeats", "100000"], timeout=1)


# --- the clips' audio -------------------------------------------------------------------------------------------


def test_clips_at_48k_and_16k_are_written_at_the_files_rate_where_the_truth_says_they_are(tmp_path):
    """Every clip was written as 16 kHz samples whatever its rate: a 48 kHz clip lasted three times what the truth said."""
    import numpy as np
    import soundfile

    from benchmarks.clip_file import FILE_RATE, GAP_SECONDS
    from benchmarks.monitor_e2e import build_file
    from tests.conftest import speechlike

    for actor, rate in ((1, 48000), (2, 16000)):
        folder = tmp_path / "data" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        quiet = np.zeros(rate // 2, np.float32)
        soundfile.write(folder / f"03-01-05-01-01-01-{actor:02d}.wav", np.concatenate([quiet, speechlike(2.0, rate, seed=actor), quiet]), rate)
    truth = build_file(tmp_path / "data", [1, 2], 1, tmp_path / "clips.wav")
    audio, rate = soundfile.read(tmp_path / "clips.wav", dtype="float32")
    assert rate == FILE_RATE
    assert [round(end - start, 1) for start, end, _ in truth] == [2.0, 2.0]
    assert audio.size / rate == pytest.approx(truth[-1][1] + GAP_SECONDS, abs=1e-3)
    edges = [0.0, *(t for start, end, _ in truth for t in (start, end)), audio.size / rate]
    for k, (start, end) in enumerate(zip(edges[:-1], edges[1:])):
        level = float(np.sqrt(np.mean(np.square(audio[int(start * rate) + 160 : int(end * rate) - 160]))))
        assert level > 0.05 if k % 2 else level == 0.0, (start, end, level)  # speech where the truth says, silence between


# --- the file source in real time ---------------------------------------------------------------------------------


def test_a_file_in_real_time_delivers_no_block_before_its_last_sample_was_spoken(tmp_path, monkeypatch):
    import threading

    import numpy as np
    import soundfile

    import ser_stream.sources as sources
    from ser_stream.ringbuffer import RingBuffer

    path = tmp_path / "tone.wav"
    rate = 8000
    soundfile.write(path, (0.1 * np.sin(np.arange(int(1.3 * rate)) / 5)).astype(np.float32), rate)
    clock = {"now": 1000.0}
    fake_time = type("Time", (), {"monotonic": staticmethod(lambda: clock["now"]),
                                  "sleep": staticmethod(lambda seconds: clock.__setitem__("now", clock["now"] + seconds))})
    monkeypatch.setattr(sources, "time", fake_time)
    delivered: list[tuple[float, int]] = []

    class Ring(RingBuffer):
        def write(self, samples, arrived_at=None):
            delivered.append((clock["now"], samples.size))
            return super().write(samples, arrived_at)

    sink = type("Sink", (), {"ring": Ring(4 * rate), "input_overflows": 0, "finished": False, "error": None, "warning": None})()
    sources.FileSource(str(path), pace="realtime").run(sink, threading.Event())
    assert sink.error is None and sum(size for _, size in delivered) == int(1.3 * rate)
    spoken = 0
    for at, size in delivered:
        spoken += size
        assert at >= 1000.0 + spoken / rate - 1e-9, (at, spoken)  # its last sample's time has come


def test_figures_are_written_as_json_any_parser_reads_and_read_back_as_measured(tmp_path):
    """An infinite latency (a clip never answered) was written as the bare word Infinity, which is not JSON."""
    import json
    import math

    from benchmarks.clients import figures_from_json, strict_json

    figures = {"latency_ms_p95": math.inf, "latency_ms_median": math.nan, "ladder": [{"p95": 150.7}, {"p95": -math.inf}]}
    text = strict_json(figures)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    back = figures_from_json(json.loads(text, parse_constant=refuse))
    assert back["latency_ms_p95"] == math.inf and math.isnan(back["latency_ms_median"])
    assert back["ladder"] == [{"p95": 150.7}, {"p95": -math.inf}]


@pytest.mark.parametrize("figures", ["benchmarks.json", "overload-300.json"])
def test_the_committed_benchmark_figures_are_strict_json(figures):
    import json
    from pathlib import Path

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    json.loads((Path(__file__).resolve().parents[1] / "docs" / figures).read_text(), parse_constant=refuse)


@pytest.mark.parametrize("arguments", [["--render-only"], ["--quick", "--model", "no-such.onnx"]], ids=["render-only", "a-run"])
def test_a_section_begun_but_never_ended_is_refused_before_anything_is_measured_and_the_file_left_as_it_was(tmp_path, capsys, arguments):
    """With its end marker gone, everything after the begin marker was taken as the old figures: the hand-written
    rest of the file was deleted without a word, at the end of the run."""
    out = tmp_path / "benchmarks.md"
    text = f"# Benchmarks\n\n{BEGIN}\nold figures\n\n## Hand-written analysis\n\nkept\n"
    out.write_text(text)
    out.with_suffix(".json").write_text((Path(__file__).resolve().parents[1] / "docs" / "benchmarks.json").read_text())  # figures to render
    line = refusal("benchmarks", [*arguments, "--out", str(out)], capsys)
    assert line == (f"python -m benchmarks: error: {out}: has {BEGIN} but no {END} after it, so where the figures end and the "
                    f"hand-written text begins is unknown; put {END} back after the figures")
    assert out.read_text() == text


# --- overload: what the monitor said against what was true ------------------------------------------------------

OVERLOAD_PHASES = [(4, 90.0), (2, 60.0)]
OVERLOAD_CLIPS = np.array([(1.0, 2.0), (5.0, 7.0)])  # a 10 s call audio (500 packets) with two clips
OVERLOAD_START = 1000.0


def overload_sent(late_seconds: float = 0.0) -> dict:
    """The sender's report: every tick ``late_seconds`` late, calls rotated by 0, 125, 250 and 375 packets."""
    return {"late_seconds": [late_seconds] * 7500, "send_errors": 0, "offsets": [0, 125, 250, 375]}


def overload_utterance(call: int, t_end: float, received_after: float, latency_ms: float, t_start: float | None = None) -> dict:
    """Call ``call``'s utterance ending at stream time ``t_end``, received ``received_after`` s after stream time 0."""
    return {"type": "utterance", "stream": f"rtp-{call + 1:08x}", "t_start": t_end - 1.0 if t_start is None else t_start,
            "t_end": t_end, "latency_ms": latency_ms, "received": OVERLOAD_START + received_after}


def overload_rows(messages: list[dict], late_seconds: float = 0.0) -> list[dict]:
    from benchmarks.overload import utterance_lateness

    return utterance_lateness(messages, OVERLOAD_START, OVERLOAD_PHASES, overload_sent(late_seconds), OVERLOAD_CLIPS, 500)


def test_overload_true_lateness_runs_from_the_silence_after_the_clips_end_less_the_senders_own_lateness():
    from benchmarks.monitor_e2e import MIN_SILENCE

    # call 0 plays the audio unrotated: a clip ends at 7.0 s; its utterance ends 0.1 s later and comes 3 s after the silence
    [row] = overload_rows([overload_utterance(0, 7.1, 7.0 + MIN_SILENCE + 3.0, 400.0)])
    assert row["at_clip_end"] and row["true_ms"] == pytest.approx(3000.0) and row["reported_ms"] == 400.0
    # the sender sent that packet 0.5 s late: that half second is not the monitor's
    [row] = overload_rows([overload_utterance(0, 7.1, 7.0 + MIN_SILENCE + 3.0, 400.0)], late_seconds=0.5)
    assert row["true_ms"] == pytest.approx(2500.0)
    # call 1 is rotated by 125 packets (2.5 s): its clip ends at 4.5 s of its stream
    [row] = overload_rows([overload_utterance(1, 4.55, 4.5 + MIN_SILENCE + 1.0, 900.0)])
    assert row["at_clip_end"] and row["true_ms"] == pytest.approx(1000.0) and row["call"] == 1


def test_overload_an_utterance_not_at_a_clip_end_counts_from_its_own_end_a_lower_bound():
    [row] = overload_rows([overload_utterance(0, 6.0, 6.0 + 4.0, 100.0)])  # mid-clip: cut by an overrun
    assert not row["at_clip_end"] and row["true_ms"] == pytest.approx(4000.0)


def test_overload_utterances_belong_to_the_phase_their_closing_audio_was_spoken_in_whatever_their_receipt():
    from benchmarks.overload import phase_of

    assert [phase_of(t, OVERLOAD_PHASES) for t in (0.0, 89.99, 90.0, 149.99, 150.0)] == ["overloaded", "overloaded", "recovering", "recovering", "after"]
    # ends at 87.1 s (a clip end of call 0: 87.0), received 20 s into the recovering phase: it was the overload's
    [row] = overload_rows([overload_utterance(0, 87.1, 110.0, 5000.0)])
    assert row["phase"] == "overloaded" and row["received"] == pytest.approx(110.0)


def test_overload_the_reported_latency_is_set_against_the_true_one_median_p95_max_and_their_ratio():
    from benchmarks.monitor_e2e import MIN_SILENCE
    from benchmarks.overload import lateness_against_reported

    rows = overload_rows([overload_utterance(0, 10.0 * k + 7.1, 10.0 * k + 7.0 + MIN_SILENCE + true_s, 1000.0)
                          for k, true_s in enumerate([2.0, 4.0, 6.0, 8.0, 10.0])])
    figures = lateness_against_reported(rows)
    assert figures["utterances"] == 5
    assert figures["true_ms"] == {"median": 6000.0, "p95": 10000.0, "max": 10000.0}
    assert figures["reported_ms"] == {"median": 1000.0, "p95": 1000.0, "max": 1000.0}
    assert figures["reported_over_true_median"] == pytest.approx(0.17)


def test_overload_the_warnings_published_are_counted_and_the_overrun_loss_told_set_against_the_status_total():
    from benchmarks.overload import warnings_said

    def warning(at: float, message: str, stream: str | None = None) -> dict:
        return {"type": "warning", "message": message, "received": OVERLOAD_START + at, **({"stream": stream} if stream else {})}

    messages = [
        warning(12.0, "the monitor is 2.1 s behind live audio: it has more streams (300 open) than its CPU can follow"),
        warning(95.0, "rtp-00000005: 3 packet(s) lost; rtp-00000005: 2.50 s of its audio was lost to overruns, 2 times (…); that "
                      "time still passed, unheard", "rtp-00000005"),
        warning(96.0, "rtp-00000007: 0.50 s of its audio was lost to overruns, once (…)", "rtp-00000007"),
        warning(130.0, "the monitor has caught up with live audio (it was up to 9.8 s behind)"),
        {"type": "status", "overruns": 3, "overrun_samples": 24000, "received": OVERLOAD_START + 140.0},
    ]
    said = warnings_said(messages, OVERLOAD_START)
    assert said["behind"] == [{"at": 12.0, "seconds": 2.1}]
    assert said["caught_up"] == [{"at": 130.0, "was_up_to_seconds": 9.8, "lost_seconds": 0.0, "lost_from_streams": 0}]
    assert said["live_loss"] == [] and said["live_loss_seconds_told"] == 0.0
    assert said["calls_told_of_overrun_loss"] == 2 and said["overrun_loss_seconds_told"] == 3.0 and said["overruns_told"] == 3
    assert said["status_overrun_seconds"] == 3.0 and said["status_overruns"] == 3


def test_overload_the_warnings_of_live_audio_lost_as_it_happens_and_the_loss_the_caught_up_warning_states_are_counted():
    """The monitor says it is losing live audio at once, then at a step that loses audio a minute or more after the
    warning before, what was lost since it; its caught-up warning says all the episode lost, what no loss warning said
    too (here the 729.31 s lost after 101.2 s, less than a minute before losses stopped). Once unrecognised, they went
    uncounted."""
    from benchmarks.overload import warnings_said

    def warning(at: float, message: str) -> dict:
        return {"type": "warning", "message": message, "received": OVERLOAD_START + at}

    messages = [
        warning(8.0, "the monitor is 2.3 s behind live audio: it has more streams (300 open) than its CPU can follow"),
        warning(41.2, "the monitor is losing live audio to overruns: 3.20 s of audio from 1 stream was lost (it fell more than "
                      "10 s behind: more streams (300 open) than its CPU can follow); that time still passes, unheard; …"),
        warning(101.2, "the monitor is still losing live audio to overruns: 7000.50 s of audio from 300 streams in the 60 s since "
                       "it last said so, 7003.70 s of audio from 300 streams since it began (300 streams open)"),  # a 120 s overload
        warning(132.6, "the monitor has caught up with live audio (it was up to 10.6 s behind; 7733.01 s of audio from 300 "
                       "streams was lost to overruns meanwhile)"),
        warning(150.0, "the monitor is losing live audio to overruns: 0.50 s of audio from 1 stream was lost (…)"),  # an episode more
        warning(160.0, "the monitor has caught up with live audio (0.50 s of audio from 1 stream was lost to overruns meanwhile)"),
        {"type": "status", "overruns": 7521, "overrun_samples": 61868080, "received": OVERLOAD_START + 170.0},
    ]
    said = warnings_said(messages, OVERLOAD_START)
    assert said["live_loss"] == [{"at": 41.2, "seconds": 3.2, "streams": 1}, {"at": 101.2, "seconds": 7000.5, "streams": 300},
                                 {"at": 150.0, "seconds": 0.5, "streams": 1}]
    assert said["live_loss_seconds_told"] == 7004.2  # less than the 7733.51 s the caught-up warnings say
    assert said["caught_up"] == [{"at": 132.6, "was_up_to_seconds": 10.6, "lost_seconds": 7733.01, "lost_from_streams": 300},
                                 {"at": 160.0, "was_up_to_seconds": None, "lost_seconds": 0.5, "lost_from_streams": 1}]
    assert said["behind"] == [{"at": 8.0, "seconds": 2.3}] and said["calls_told_of_overrun_loss"] == 0


def test_overload_healthz_answers_other_than_200_and_none_at_all_are_counted():
    from benchmarks.overload import health_summary

    polls = [{"code": 200, "answer_seconds": 0.002}, {"code": 503, "answer_seconds": 0.004}, {"code": None, "answer_seconds": 10.0},
             {"code": 200, "answer_seconds": 0.003}]
    health = health_summary(polls)
    assert health["polls"] == 4 and health["not_200"] == 2 and health["codes"] == {"200": 2, "503": 1, "none": 1}
    assert health["answer_ms"]["max"] == 10000.0


def test_overload_recovery_is_the_first_status_from_which_the_worker_stays_caught_up_to_the_phases_end():
    from benchmarks.overload import recovery

    def status(at: float, behind: float) -> dict:
        return {"type": "status", "behind_seconds": behind, "received": OVERLOAD_START + at}

    # 9 s behind at the drop (90 s), under 1 s at 100 s, back to 2 s at 101 s, under 1 s from 104 s on
    behind = [(88.5, 9.0), (95.0, 4.0), (100.0, 0.5), (101.0, 2.0), (104.0, 0.8), (110.0, 0.0), (149.0, 0.0)]
    caught = recovery([status(at, b) for at, b in behind], OVERLOAD_START, OVERLOAD_PHASES)
    assert caught == {"caught_up": True, "seconds_after_the_drop": 14.0, "behind_seconds_at_the_drop": 9.0}
    never = recovery([status(at, b) for at, b in [(95.0, 4.0), (140.0, 3.0)]], OVERLOAD_START, OVERLOAD_PHASES)
    assert never["caught_up"] is False and never["seconds_after_the_drop"] is None


def test_overload_utterances_outside_the_speech_sent_and_utterances_per_call_are_counted():
    from benchmarks.overload import fairness, outside_speech

    rows = overload_rows([overload_utterance(0, 2.1, 5.0, 10.0, t_start=0.9),  # inside the first clip
                          overload_utterance(0, 4.0, 6.0, 10.0, t_start=3.0),  # in the silence between the clips
                          overload_utterance(1, 4.6, 7.0, 10.0, t_start=2.4)])  # call 1's second clip, rotated 2.5 s
    assert outside_speech(rows, [0, 125, 250, 375], OVERLOAD_CLIPS, 500) == 1
    assert fairness(rows, 4, 90.0, 0.2) == {"clips_each_call_played": 18.0, "min": 0, "median": 0.5, "max": 2, "calls_without_one": 2}


@pytest.mark.slow
def test_overload_quick_runs_end_to_end_and_writes_every_figure_as_strict_json(ravdess, tmp_path):
    out = tmp_path / "overload.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.overload", "--quick", "--data", str(ravdess), "--out-json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert [phase["calls"] for phase in figures["phases"].values()] == [6, 2]
    assert figures["streams_started"] == figures["streams_ended"] == 6 and figures["monitor_exit_status"] == 0
    assert figures["healthz"]["polls"] > 0 and figures["healthz"]["not_200"] == 0
    assert set(figures["warnings"]) >= {"behind", "caught_up", "live_loss", "calls_told_of_overrun_loss", "status_overrun_seconds"}
    assert figures["timeline"] and figures["sender_errors"] == 0
    assert "overloaded (6 calls" in result.stdout and "recovering (2 calls" in result.stdout


def test_overload_an_utterance_whose_call_stopped_before_its_closing_silence_is_counted_apart_from_the_phases():
    from benchmarks.monitor_e2e import MIN_SILENCE
    from benchmarks.overload import CALL_ENDED, utterance_lateness

    # calls 0 and 1 play on after 87.2 s, calls 2 and 3 stop then; call 0 and call 2 (rotated 5 s) both have a clip end at 87 s
    phases = [(4, 87.2), (2, 60.0)]
    rows = utterance_lateness([overload_utterance(0, 87.1, 87.0 + MIN_SILENCE + 0.1, 50.0), overload_utterance(2, 87.1, 90.0, 50.0)],
                              OVERLOAD_START, phases, overload_sent(), OVERLOAD_CLIPS, 500)
    assert [row["phase"] for row in rows] == ["recovering", CALL_ENDED]


def test_overload_an_utterance_in_a_later_round_of_the_call_audio_lies_within_the_speech_sent():
    from benchmarks.overload import outside_speech

    # call 0, 10.9 to 12.1 s of its stream: the first clip (1.0 to 2.0 s) again, the 10 s audio played a second time
    rows = overload_rows([overload_utterance(0, 12.1, 13.0, 10.0, t_start=10.9)])
    assert outside_speech(rows, [0, 125, 250, 375], OVERLOAD_CLIPS, 500) == 0


def test_overload_behind_seconds_are_set_beside_the_true_lateness_in_seconds_of_the_utterances_received_near_them():
    from benchmarks.monitor_e2e import MIN_SILENCE
    from benchmarks.overload import behind_against_truth

    # received 3 s after their closing silence (at 10.5 s and 20.5 s of the run), beside statuses at 11 s and 60 s
    rows = overload_rows([overload_utterance(0, 7.1, 7.0 + MIN_SILENCE + 3.0, 10.0), overload_utterance(0, 17.1, 17.0 + MIN_SILENCE + 3.0, 10.0)])
    statuses = [{"type": "status", "behind_seconds": 2.5, "received": OVERLOAD_START + 11.0},
                {"type": "status", "behind_seconds": 9.0, "received": OVERLOAD_START + 60.0}]  # no utterance within 5 s
    figures = behind_against_truth(rows, statuses, OVERLOAD_START, OVERLOAD_PHASES)
    assert figures["overloaded"] == {"statuses": 1, "behind_seconds_median": 2.5, "true_seconds_median": 3.0}


def test_overload_the_timeline_shows_each_10_s_the_last_status_counts_and_the_slowest_healthz_answer_in_ms():
    from benchmarks.overload import timeline

    def status(at: float, streams: int, overruns: int) -> dict:
        return {"type": "status", "behind_seconds": 0.0, "queue_depth": 0, "streams": streams, "overruns": overruns,
                "received": OVERLOAD_START + at}

    health = [{"at": OVERLOAD_START + 1.0, "code": 200, "answer_seconds": 0.25}, {"at": OVERLOAD_START + 2.0, "code": 503, "answer_seconds": 0.004}]
    [bucket] = timeline([], [status(1.0, 6, 0), status(9.0, 4, 3)], health, OVERLOAD_START)
    assert bucket["from_s"] == 0.0 and bucket["streams"] == 4 and bucket["overruns"] == 3
    assert bucket["healthz_not_200"] == 1 and bucket["healthz_ms_max"] == 250


def test_overload_the_backlog_at_the_drop_is_the_last_2_s_before_it_not_an_earlier_peak():
    from benchmarks.overload import recovery

    statuses = [{"type": "status", "behind_seconds": behind, "received": OVERLOAD_START + at} for at, behind in [(60.0, 12.0), (89.0, 3.0), (95.0, 0.5)]]
    assert recovery(statuses, OVERLOAD_START, OVERLOAD_PHASES)["behind_seconds_at_the_drop"] == 3.0


def test_overload_the_senders_own_lateness_is_summarised_and_its_ticks_more_than_a_packet_late_counted():
    from benchmarks.overload import analyse

    sent = {**overload_sent(), "late_seconds": [0.0, 0.01, 0.015, 0.03, 0.05]}
    figures = analyse([], OVERLOAD_START, OVERLOAD_PHASES, sent, [], [], OVERLOAD_CLIPS, 500)
    assert figures["sender_ticks_over_20_ms_late"] == 2
    assert figures["sender_late_ms"] == {"median": 15.0, "p95": 50.0, "max": 50.0}
