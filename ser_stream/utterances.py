"""VAD segmentation into utterances, and the paper's rule that labels each one.

``UtteranceTracker`` cuts one stream's canonical-rate audio into utterances by the voice detectors (``vad``) and
schedules their windows; an utterance is labelled by the mean of its windows' softmax outputs (``average_windows``),
the rule the offline classifier and the live monitor both call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.errors import SerStreamError
from ser_stream.features import SAMPLE_RATE
from ser_stream.vad import VAD_FRAME_SAMPLES, SileroDetector, WebRtcVoice, silero_detector
from ser_stream.windows import TRIM_FRAME, WindowConfig, cut_windows, frame_energies


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


# The most audio (seconds at the canonical rate) taken between two passes of the voice detector: the worker reads
# a stream's ring in pieces this long, and the history keeps room for one beyond the utterance it must hold.
PUSH_LIMIT_SECONDS = 1.0
PUSH_SLACK_SAMPLES = 64  # a resampler's block may come out a few samples longer than its input's duration

# When the audio up to a stream position arrived (``time.monotonic()``): one time for all of it, or a function of the
# position (the worker's streams: the ring buffer remembers when each write came). An utterance's latency runs from it.
Arrival = float | Callable[[int], float]


def arrival_at(arrival: Arrival, position: int) -> float:
    """When the audio that ends at stream ``position`` arrived."""
    return arrival(position) if callable(arrival) else arrival


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
    hold_db: float = 35.0  # speech this far below the utterance's peak does not hold it open (30 split calls)
    # Silero misses some shouting and screaming (python -m benchmarks.vad_coverage): a frame it scores below its
    # threshold but at least this, that WebRTC's voice detector (aggressive mode) calls voice, is speech too.
    # None: Silero alone. Noise WebRTC takes for voice (hiss, hum, sirens) Silero scores below it; at 0.1,
    # breaths in room tone became utterances (python -m benchmarks.utterance_ends --voice-floor off 0.1 0.2).
    voice_floor: float | None = 0.2

    def __post_init__(self) -> None:
        if not self.margin_seconds <= self.min_silence_seconds <= 60.0:  # less would still wait out the margin kept after speech
            raise SerStreamError(
                f"silence that ends an utterance (--min-silence) of {self.min_silence_seconds} s is outside {self.margin_seconds:g}–60 s"
            )
        if not self.min_speech_seconds < self.max_utterance_seconds <= 600.0:
            raise SerStreamError(
                f"longest utterance (--max-utterance) of {self.max_utterance_seconds} s must be above the "
                f"shortest speech kept ({self.min_speech_seconds} s) and at most 600 s"
            )
        if not 0.0 < self.silence_threshold <= self.speech_threshold < 1.0:
            raise SerStreamError(
                f"VAD thresholds must satisfy 0 < silence ({self.silence_threshold}) ≤ speech ({self.speech_threshold}) < 1"
            )
        if self.voice_floor is not None and not 0.0 < self.voice_floor <= self.silence_threshold:
            raise SerStreamError(
                f"Silero score below which WebRTC's voice detector is not asked (--voice-floor) of {self.voice_floor} "
                f"must be above 0 and at most Silero's silence threshold ({self.silence_threshold})"
            )



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
    start_sample: int  # the first frame of speech, less the margin (not before the stream's start)
    speech_start: int = 0  # the first frame of speech itself
    end_sample: int = 0
    next_window_sample: int = 0
    windows_cut: int = 0
    last_window_end: int = 0
    peak_power: float = 0.0  # the loudest VAD-speech frame so far (variance of its samples)
    closed: bool = False
    closed_at: float = 0.0  # time.monotonic() when the audio that ended it arrived (``Arrival``)
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
        voice: Callable[[NDArray[np.float32]], bool] | None = None,
    ) -> None:
        self.stream, self.window, self.config = stream, window, config
        self.detector = detector or silero_detector()
        self.voice = voice or (WebRtcVoice() if config.voice_floor is not None else None)
        # One push may bring up to PUSH_LIMIT_SECONDS not yet classified: room for it too, or a block read at
        # --pace fast (the ring's 10 s) overwrote the open utterance's start before the VAD reached it.
        keep = config.max_utterance_seconds + window.window_seconds + config.min_silence_seconds + 2 * config.margin_seconds + PUSH_LIMIT_SECONDS
        self._history = np.zeros(int(keep * SAMPLE_RATE) + 2 * VAD_FRAME_SAMPLES, dtype=np.float32)
        self._history_end = 0  # stream position (samples) just past the newest sample kept
        self._vad_position = 0  # stream position of the next frame to classify
        self._in_speech = False
        self._last_speech_end = 0
        self._published_until = 0  # stream position where the last utterance kept ended: the next starts no earlier
        self._next_id = 1
        self.open: Utterance | None = None
        self.waiting: dict[int, Utterance] = {}  # utterances with windows cut, until labelled
        self.samples_seen = 0

    # history -----------------------------------------------------------------
    # The history is circular: stream position p lives at p % size, so appending costs the block, not the
    # history (shifting it cost 1 ms a block per stream at --max-utterance 600).
    def _append(self, samples: NDArray[np.float32]) -> None:
        size = self._history.size
        kept = samples[-size:]
        start = (self._history_end + samples.size - kept.size) % size
        first = min(kept.size, size - start)
        self._history[start : start + first] = kept[:first]
        self._history[: kept.size - first] = kept[first:]
        self._history_end += samples.size

    def _audio(self, start: int, end: int) -> NDArray[np.float32]:
        """Stream samples [start, end); positions before the kept history or the stream start read as silence."""
        size = self._history.size
        out = np.zeros(end - start, dtype=np.float32)
        lo, hi = max(start, self._history_end - size, 0), min(end, self._history_end)
        if hi > lo:
            first = min(hi - lo, size - lo % size)
            out[lo - start : lo - start + first] = self._history[lo % size : lo % size + first]
            out[lo - start + first : hi - start] = self._history[: hi - lo - first]
        return out

    # segmentation ------------------------------------------------------------
    def feed(self, samples: NDArray[np.float32], arrival: Arrival) -> list[WindowJob]:
        """Take new canonical-rate audio, however much; return the windows now ready for inference."""
        jobs: list[WindowJob] = []
        step = int(PUSH_LIMIT_SECONDS * SAMPLE_RATE)
        for start in range(0, max(samples.size, 1), step):
            self.push(samples[start : start + step])
            jobs += self.advance(arrival)
        return jobs

    def push(self, samples: NDArray[np.float32]) -> None:
        """Take new canonical-rate audio without classifying it yet (see ``pending_frames``): at most
        ``PUSH_LIMIT_SECONDS`` between two ``advance`` calls, which the history has room for."""
        if samples.size > PUSH_LIMIT_SECONDS * SAMPLE_RATE + PUSH_SLACK_SAMPLES:
            raise ValueError(f"{samples.size} samples pushed at once; at most {PUSH_LIMIT_SECONDS} s between advances")
        self._append(samples)
        self.samples_seen += samples.size

    def pending_frames(self) -> list[NDArray[np.float32]]:
        """The VAD frames ``advance`` will consume, in order: for a caller that batches the VAD."""
        starts = range(self._vad_position, self._history_end - VAD_FRAME_SAMPLES + 1, VAD_FRAME_SAMPLES)
        return [self._audio(start, start + VAD_FRAME_SAMPLES) for start in starts]

    def advance(self, arrival: Arrival, probabilities: list[float] | None = None) -> list[WindowJob]:
        """Classify the pending frames (or take their ``probabilities``); return the windows now ready."""
        given = iter(probabilities) if probabilities is not None else None
        jobs: list[WindowJob] = []
        margin = int(self.config.margin_seconds * SAMPLE_RATE)
        silence = int(self.config.min_silence_seconds * SAMPLE_RATE)
        longest = int(self.config.max_utterance_seconds * SAMPLE_RATE)
        shortest = int(self.config.min_speech_seconds * SAMPLE_RATE)
        # The VAD's recurrent state holds on to speech for a frame or several after the voice stops: frames it
        # still calls speech but ``hold_db`` below the utterance's peak stay in the utterance, yet its silence is
        # counted from the last frame above them (python -m benchmarks.utterance_ends measures the gain).
        faint = 10 ** (-self.config.hold_db / 10)
        while self._vad_position + VAD_FRAME_SAMPLES <= self._history_end:
            frame_start = self._vad_position
            frame_end = frame_start + VAD_FRAME_SAMPLES
            frame = self._audio(frame_start, frame_end)
            probability = next(given) if given is not None else self.detector(frame)
            self._vad_position = frame_end
            threshold = self.config.silence_threshold if self._in_speech else self.config.speech_threshold
            voiced = self.voice(frame) if self.voice is not None else False
            if probability >= threshold or (voiced and probability >= (self.config.voice_floor or threshold)):
                if self.open is None:
                    # the margin before speech, but none of the audio the last utterance holds (its margin after,
                    # a tail over loud sound): one stretch of audio is in one utterance's windows, never two
                    start = max(0, frame_start - margin, self._published_until)
                    self.open = Utterance(self._next_id, start, speech_start=frame_start, next_window_sample=start)
                    self._next_id += 1
                self._in_speech = True
                self.open.end_sample = frame_end
                power = float(np.var(frame))  # less the frame's mean: a DC offset is not speech going on
                if power >= self.open.peak_power * faint:
                    self._last_speech_end = frame_end
                self.open.peak_power = max(self.open.peak_power, power)
            else:
                self._in_speech = False
            if self.open is not None and frame_end - self._last_speech_end >= silence:
                jobs += self._close(self.open, arrival, available=self._vad_position)
            elif self.open is not None and frame_end - self.open.start_sample >= longest:
                # Speech going on past --max-utterance by the shortest utterance is cut at exactly the limit, and the
                # next utterance takes over from there: contiguous pieces, whatever blocks the audio came in. Speech
                # that stops sooner is the piece's last words, kept in it (at most 0.25 s and the margin past the
                # limit): alone, it was an utterance of a tenth of a second labelled from one window of silence.
                # In the silence after speech, end as silence would have, within the limit.
                limit = self.open.start_sample + longest
                beyond = self.open.end_sample - limit  # speech heard past the limit
                if beyond >= shortest:
                    cut_short = self.open
                    cut_short.end_sample = limit
                    jobs += self._close(cut_short, arrival, available=limit, cut=True)
                    self.open = Utterance(self._next_id, limit, speech_start=limit, end_sample=frame_end, next_window_sample=limit,
                                          peak_power=cut_short.peak_power)
                    self._next_id += 1
                elif beyond <= 0 and not self._in_speech:
                    jobs += self._close(self.open, arrival, available=limit)  # limit <= frame_end: where the VAD is
        if self.open is not None:
            # Only windows inside the utterance as heard so far: its end (the last speech and the margin) can
            # still move later, never earlier. Silence after it waits; if the utterance closes there, the
            # windows the offline rule cuts from its span are added when it closes.
            # None past --max-utterance while it may yet be cut there (the cut adds the window ending at the limit).
            jobs += self._schedule(self.open, min(self._vad_position, self.open.end_sample + margin, self.open.start_sample + longest))
        return jobs

    def skip(self, samples: int, arrival: Arrival) -> list[WindowJob]:
        """``samples`` of the stream were lost: end what was open where the audio stopped, then move past them unheard.

        No VAD or window runs over the gap, so a worker that fell behind does
        not fall further behind catching up on time it cannot hear.
        """
        jobs = self.advance(arrival)
        if self.open is not None:
            jobs += self._close(self.open, arrival)
        kept = min(samples, self._history.size)
        self._append(np.zeros(kept, dtype=np.float32))
        self._history_end += samples - kept  # positions move on; the history holds silence for the gap
        self._vad_position = self._history_end
        self._in_speech = False
        if isinstance(self.detector, SileroDetector):  # what follows the gap does not follow on from what came before it:
            self.detector.reset()  # its recurrent state held the speech the gap cut, and heard the silence after as speech
        self.samples_seen += samples
        return jobs

    def finish(self, arrival: Arrival) -> list[WindowJob]:
        """End of stream: close the open utterance with what was heard."""
        return self._close(self.open, arrival) if self.open is not None else []

    def _schedule(self, utterance: Utterance, available_until: int) -> list[WindowJob]:
        jobs = []
        window, hop = self.window.window_samples, self.window.hop_samples
        while utterance.next_window_sample + window <= available_until:
            jobs.append(self._job(utterance, utterance.next_window_sample, utterance.next_window_sample + window))
            utterance.next_window_sample += hop
        return jobs

    def _close(self, utterance: Utterance, arrival: Arrival, available: int | None = None, cut: bool = False) -> list[WindowJob]:
        """End an utterance; cut the rest of the windows the offline rule cuts from its span
        (``window_starts``: by the hop from its start, then one aligned to its end, or one padded).

        Its end (with the margin) goes no further than ``available``: where the VAD has got to, so that it does
        not depend on how much audio the source had delivered past it; at the end of a stream, all of it. An
        utterance ``cut`` at --max-utterance ends exactly there. What ended it: the frame the VAD has just
        classified, or (without ``available``: the audio stopped, or the stream ended) the last audio heard.
        """
        ended_by = self._vad_position if available is not None else self._history_end
        self.open = None
        margin = 0 if cut else int(self.config.margin_seconds * SAMPLE_RATE)
        if not cut:
            limit = utterance.start_sample + int(self.config.max_utterance_seconds * SAMPLE_RATE)
            refined = self._refine_end(utterance)
            # last words past the limit (``advance``) are kept, and no more: less than the shortest utterance past it
            utterance.end_sample = refined if utterance.end_sample <= limit else min(refined, limit + int(self.config.min_speech_seconds * SAMPLE_RATE))
        end = min(utterance.end_sample + margin, self._history_end if available is None else available)
        speech = utterance.end_sample - utterance.speech_start  # not start_sample less the margin: near t=0 the margin is cut
        jobs: list[WindowJob] = []
        # A piece cut at --max-utterance is speech however little of it is (at --max-utterance 0.26, the margin's 0.1 s);
        # the one after it is only opened with the shortest utterance's speech past the cut (``advance``).
        if speech < self.config.min_speech_seconds * SAMPLE_RATE and utterance.windows_cut == 0 and not cut:
            return jobs  # a click or a breath: not an utterance
        # Only at min_speech_seconds 0 or less (no CLI flag sets it) does a cut right at the stream's end open a continuation
        # without audio: its windows, cut from nothing, once stopped the worker. Dropped; its id unused.
        if end <= utterance.start_sample and utterance.windows_cut == 0:
            return jobs
        self._published_until = end
        jobs += self._schedule(utterance, end)
        window = self.window.window_samples
        if utterance.windows_cut == 0:  # shorter than a window: centred in silence, as offline
            padded, _ = cut_windows(self._audio(utterance.start_sample, end), self.window)
            jobs.append(self._job(utterance, utterance.start_sample, end, audio=padded[0]))  # its times: the audio it holds
        elif utterance.last_window_end < end:
            jobs.append(self._job(utterance, end - window, end))
        utterance.end_sample = end
        utterance.closed = True
        utterance.closed_at = arrival_at(arrival, ended_by)
        self.waiting[utterance.utterance_id] = utterance
        return jobs

    def _refine_end(self, utterance: Utterance) -> int:
        """Extend the VAD's end over trailing speech still within ``tail_db`` of the utterance's peak.

        Silero at 8 kHz lets go of quiet word endings (a sad "…by the door")
        early; the energy envelope still holds them, as offline trimming does.
        """
        frame = TRIM_FRAME  # offline trimming's 25 ms
        speech = self._audio(utterance.start_sample, utterance.end_sample)
        tail = self._audio(utterance.end_sample, min(self._history_end, self._vad_position))
        if speech.size < frame or tail.size < frame:
            return utterance.end_sample
        offset = np.float32(np.concatenate([speech, tail]).mean(dtype=np.float64))  # a DC offset is not speech going on
        speech, tail = speech - offset, tail - offset
        peak = float(frame_energies(speech, frame).max())
        energies = frame_energies(tail, frame)
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
