"""The monitor's worker: ring buffers → canonical audio → VAD/utterances → batched inference → messages.

One worker thread serves every stream, so windows from many streams share
batches. It never waits on a subscriber: messages go to ``emit``, which only
hands them over.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.dcblocker import DcBlocker
from ser_stream.errors import AudioInputError, RecentKeys, StreamRefused, one_line
from ser_stream.features import MAX_AMPLITUDE, SAMPLE_RATE, spectrogram
from ser_stream.inference import EmotionModel
from ser_stream.messages import (
    BEHIND_CAUGHT_UP_SECONDS,
    BEHIND_WARNING_SECONDS,
    Message,
    Status,
    StreamEvent,
    StreamStarted,
    UtteranceResult,
    Window,
    latency_summary,
    notice,
    rounded,
    utc_now,
)
from ser_stream.resampler import StreamResampler
from ser_stream.ringbuffer import RingBuffer
from ser_stream.utterances import PUSH_LIMIT_SECONDS, FinishedUtterance, UtteranceConfig, UtteranceTracker, WindowJob
from ser_stream.vad import SileroDetector, silero_batch
from ser_stream.windows import WindowConfig


@dataclass(frozen=True)
class MonitorConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    utterance: UtteranceConfig = field(default_factory=UtteranceConfig)
    max_batch: int = 32
    ring_seconds: float = 10.0
    status_interval_seconds: float = 1.0
    # Streams open at once. Each allocates 0.80 MB at 8 kHz, 1.12 MB at 16 kHz, 2.40 MB at 48 kHz at the default
    # --max-utterance (tracemalloc, 50 streams: the ring holds ring_seconds at the stream's own rate, 4 bytes a
    # sample; the audio history grows by 32 kB per second of --max-utterance; resampler, VAD state) and 2 cores
    # of an Intel Xeon follow 150 or more real-time calls (docs/benchmarks.md), so 200 leaves room for bursts
    # while a flood of spoofed RTP SSRCs or ingest 'start's cannot exhaust memory (480 MB at 48 kHz); what is
    # refused is counted (``refused_streams``).
    max_streams: int = 200


# A refusal of an id refused less than this long before is the same call trying again (an RTP call is tried
# each second while it sends, an ingest platform may retry its 'start'): refused_streams counts it once. At most
# REFUSED_IDS_TRACKED ids are remembered, so a flood of new ones is counted one by one in bounded memory.
REFUSED_ID_SECONDS = 5.0
REFUSED_IDS_TRACKED = 4096
READS_KEPT = 8  # a stream's latest reads that ``Stream.arrival_of`` maps back to the ring: an utterance ends within them
# While live audio is being lost to overruns, the warning that says how much comes at once, then at most this often: at
# 300 calls on 2 cores 29 % of all audio was lost for 50 s and no warning said so until each call's end.
LOSS_WARNING_SECONDS = 60.0


class Stream:
    """One audio stream: what its source writes, and the worker's state for it."""

    def __init__(self, stream_id: str, sample_rate: int, config: MonitorConfig, detector: Any = None) -> None:
        self.stream_id, self.sample_rate = stream_id, sample_rate
        self.ring = RingBuffer(int(config.ring_seconds * sample_rate))
        self.dc_blocker = DcBlocker(sample_rate)  # what classify takes off a file as its mean, taken off as it comes
        self.resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        # A step's read: a second of audio at most, however much is waiting, in whole blocks of the resampler's input. At
        # a rate whose ratio to 8 kHz is approximated (47952 Hz: 166/995) a second's read left a remainder that grew
        # until one read gave more than a second of output, and the worker stopped, every stream with it.
        down = self.resampler.down
        self.read_limit = max(down, int(PUSH_LIMIT_SECONDS * sample_rate) // down * down)
        self.tracker = UtteranceTracker(stream_id, config.window, config.utterance, detector)
        self.input_overflows = 0
        self.nonfinite_samples = 0  # NaN/Inf, or beyond any audio scale, from a live source: replaced by silence and counted
        self.finished = False  # set by the source when it has written everything
        self.live = True  # its audio comes as it happens; a --pace fast file's, read ahead, cannot be behind it (``Worker.behind_seconds``)
        self.error: str | None = None
        self.warning: str | None = None
        self.start_warning: str | None = None  # said right after its stream_started (sampled below 8 kHz), not at its end
        self.announced = False  # its stream_started has been emitted: a warning about it is said at once (Worker.warn)
        self.early_warnings: list[str] = []  # warnings about it from before that, said right after its stream_started
        self.ended = False  # set by the worker once everything is published and the id is free for a new stream
        self.level = 0.0  # RMS of the latest audio, for the dashboard meter
        self.overrun_samples_skipped = 0  # of ring.overrun_samples, how many stream time has already moved past
        self.overrun_samples_tallied = 0  # of ring.overrun_samples, how many the monitor's loss warnings have counted
        self.loss_tallies: dict[str, int] = {}  # LossTally.name → the serial of the tally that last counted this stream
        # (canonical start, canonical end, ring start, ring end) of its latest reads: where the voice detector's audio
        # came from in the ring, whose times of arrival an utterance's latency runs from (``arrival_of``)
        self.reads: deque[tuple[int, int, int, int]] = deque(maxlen=READS_KEPT)
        # Time a live device was away before it was reopened (``mark_gap``): (ring position, samples at its rate), for
        # the worker to move stream time past there; and the totals, for status (a mic source's device_gaps…).
        self.gaps: deque[tuple[int, int]] = deque()
        self.device_gaps = 0
        self.device_gap_samples = 0
        self._last_gap_position: int | None = None
        self.started_at = utc_now()  # its t = 0 on the wall clock
        self.utterances_published = 0  # none by its end: its stream_ended comes with a warning that no speech was heard

    def mark_gap(self, samples: int) -> None:
        """The source heard nothing for ``samples`` (a device away until it was reopened) after what it has written
        so far: stream time passes over them there, as over audio an overrun lost. Called by the source's thread
        while nothing writes; time marked at the same position again (a reopen that failed after opening) adds up."""
        if samples <= 0:
            return
        position = self.ring.written
        if position != self._last_gap_position:
            self.device_gaps += 1
            self._last_gap_position = position
        self.gaps.append((position, samples))
        self.device_gap_samples += samples

    def gap_counters(self) -> dict[str, int]:
        """Status's device_gaps and device_gap_samples: a mic source's stream's, totals since it started."""
        return {"device_gaps": self.device_gaps, "device_gap_samples": self.device_gap_samples}

    def read(self) -> NDArray[np.float32]:
        """A step's audio: at most ``read_limit`` samples, and none past the next gap ``mark_gap`` marked."""
        return self.ring.read(self.read_limit, until=self.gaps[0][0] if self.gaps else None)

    def hear(self, canonical: NDArray[np.float32], ring_start: int) -> None:
        """Hand the voice detector audio resampled from the ring's samples ``ring_start`` up to its read position."""
        canonical_start = self.tracker.samples_seen
        self.tracker.push(canonical)
        if canonical.size:
            self.reads.append((canonical_start, self.tracker.samples_seen, ring_start, self.ring.read_position))

    def arrival_of(self, position: int) -> float:
        """When the audio up to canonical stream ``position`` arrived in the ring (``time.monotonic()``): the time of
        the ring sample its last sample was resampled from; past the last read (the resampler's flush), its last."""
        if not self.reads:
            return time.monotonic()  # nothing heard yet: nothing waited
        last = position - 1
        # the latest read that starts at or before it (before every read kept: the oldest, at its first sample)
        read = next((read for read in reversed(self.reads) if last >= read[0]), self.reads[0])
        canonical_start, canonical_end, ring_start, ring_end = read
        offset = min(max(0, last - canonical_start), canonical_end - canonical_start - 1)
        return self.ring.arrival_of(ring_start + offset * (ring_end - ring_start) // (canonical_end - canonical_start))

    def skip_lost_audio(self, before: int) -> list[WindowJob]:
        """Move stream time past audio lost before ring position ``before`` (where the block just read starts): what
        the ring overwrote since the last read (the worker fell behind a live source), and gaps marked there.

        The lost time is not heard (it is gone) but it is not left out of the
        timeline either: what was open ends where the audio stopped, and the
        times of everything after stay seconds since the stream's start.
        """
        lost = self.ring.overrun_samples - self.overrun_samples_skipped
        self.overrun_samples_skipped = self.ring.overrun_samples
        while self.gaps and self.gaps[0][0] <= before:
            lost += self.gaps.popleft()[1]
        if lost <= 0:
            return []
        self.tracker.push(self.resampler.flush())  # what came before the gap, to its last sample
        self.resampler = StreamResampler(self.sample_rate, SAMPLE_RATE)
        self.dc_blocker = DcBlocker(self.sample_rate)  # what follows the gap starts at its own first sample's level
        return self.tracker.skip(round(lost * SAMPLE_RATE / self.sample_rate), self.arrival_of)


@dataclass
class LossTally:
    """Live audio lost to overruns over a stretch of time, for the monitor's warnings: seconds, and how many streams
    lost it, each counted once by the tally's serial left on the stream (a set of ids grows through an hours-long
    overload, calls coming and going)."""

    name: str  # which of a stream's ``loss_tallies`` is this tally's
    serial: int
    seconds: float = 0.0
    streams: int = 0

    def add(self, stream: Stream, seconds: float) -> None:
        self.seconds += seconds
        if stream.loss_tallies.get(self.name) != self.serial:
            stream.loss_tallies[self.name] = self.serial
            self.streams += 1

    def said(self) -> str:
        """``2.50 s of audio from 3 streams``."""
        return f"{self.seconds:.2f} s of audio from {streams_counted(self.streams)}"


def streams_counted(count: int) -> str:
    """``1 stream``, ``3 streams``."""
    return f"{count} stream{'' if count == 1 else 's'}"


class Worker:
    """Runs the pipeline for all streams until stopped, or until every stream has ended."""

    def __init__(self, model: EmotionModel, config: MonitorConfig, emit: Callable[[Message], None]) -> None:
        self.model, self.config, self.emit = model, config, emit
        self.streams: dict[str, Stream] = {}
        self.lock = threading.Lock()
        self.latencies_ms: deque[float] = deque(maxlen=1000)
        self.windows_done = 0
        self.utterances_done = 0
        self.queue_depth = 0
        self.behind_seconds = 0.0  # how long the oldest audio a live stream has waiting has waited, as a step ends
        self._behind_worst: float | None = None  # since the warning that it is behind: the most it was; None: not said
        # Live audio lost to overruns (``_note_losses``): when the last warning of it was said (time.monotonic(); None:
        # none since the monitor last caught up), what was lost since then, and since the first of them.
        self._loss_said_at: float | None = None
        self._tally_serials = itertools.count()
        self._lost_since_said = self._new_tally("since_said")
        self._lost_in_episode = self._new_tally("episode")
        self.streams_started = 0
        self.failed_streams = 0  # streams that ended with an error, for the exit status
        self.refused_streams = 0  # calls refused (StreamRefused): at --max-streams, a duplicate id, or while stopping
        self._refused_ids = RecentKeys(REFUSED_ID_SECONDS, REFUSED_IDS_TRACKED)  # retries are not new calls
        # Streams taken but not yet announced. stream_started is emitted by the worker's thread, like every message
        # about the stream after it: emitted on the event loop's thread (an ingest 'start') it would be published at
        # once, ahead of the previous stream of that id's stream_ended, still queued for the loop.
        self._unannounced: list[Stream] = []
        self.finishing = False  # set by finish(): every stream is closed and published, then run() returns
        self.crash: str | None = None  # set if the worker itself failed
        self.latest_status: tuple[Message | None, float] = (None, 0.0)  # the last status built, at time.monotonic()
        self.last_step_at: float | None = None  # time.monotonic() of its last pass over the streams: /healthz's heartbeat
        self.ended_totals: dict[str, int] = dict.fromkeys(STREAM_COUNTERS, 0)  # counts of streams that have left
        self.extra_counters: list[Callable[[], dict[str, int]]] = []  # e.g. the RTP receiver's, merged into status
        self._last_status = 0.0

    def add_stream(self, stream: Stream) -> None:
        """Take a stream, or raise ``StreamRefused`` (counted) with the reason in one line; the worker announces it."""
        with self.lock:
            self._check_room(stream.stream_id)
            self.streams[stream.stream_id] = stream
            self.streams_started += 1
            self._unannounced.append(stream)

    def open_stream(self, stream_id: str, sample_rate: int) -> Stream:
        """A new stream for a call, taken; the limits are checked before it is built, so a flood of calls the
        monitor has no room for (spoofed RTP SSRCs) costs a check each, not a stream."""
        with self.lock:
            self._check_room(stream_id)
        stream = Stream(stream_id, sample_rate, self.config)
        self.add_stream(stream)
        return stream

    def is_active(self, stream_id: str) -> bool:
        """Whether a stream of this id is still open: a caller reconnecting at once waits for it (ingest)."""
        with self.lock:
            return stream_id in self.streams

    def warn(self, line: str, stream_id: str | None = None) -> None:
        """A warning, from any thread, about ``stream_id`` if given: one about a stream the worker has not yet announced
        is said right after its stream_started (an ingest connection's bad frame was published before it)."""
        if stream_id is not None:
            with self.lock:
                stream = self.streams.get(stream_id)
                if stream is not None and not stream.announced:
                    stream.early_warnings.append(line)
                    return
        self.emit(notice("warning", line, stream=stream_id))

    def count_refused(self) -> None:
        """A call refused before it reached the worker (an ingest connection's second 'start'), counted with the rest."""
        with self.lock:
            self.refused_streams += 1

    def _check_room(self, stream_id: str) -> None:
        """Raise ``StreamRefused`` if a stream of this id cannot be taken now; called with the lock held."""
        if self.finishing:
            reason = "the monitor is stopping"
        elif stream_id in self.streams:
            reason = "a stream of that id is still active"
        elif len(self.streams) >= self.config.max_streams:
            reason = f"{self.config.max_streams} streams are open, the most this monitor takes (--max-streams)"
        else:
            return
        now = time.monotonic()
        if not self._refused_ids.remembers(stream_id, now):
            self.refused_streams += 1
        self._refused_ids.note(stream_id, now)
        raise StreamRefused(stream_id, reason)

    def _announce(self, started: list[Stream]) -> None:
        """stream_started for streams taken from ``_unannounced``, on the worker's thread (see there why), each
        followed by its start warning: said before it (from the thread that opened the stream), --print-utterances
        printed it ahead of its stream and a subscriber that --await-subscribers waited for never got it."""
        for stream in started:
            announced: StreamStarted = {"type": "stream_started", "stream": stream.stream_id, "t": 0.0, "started_at": stream.started_at}
            self.emit(announced)
            if stream.start_warning:
                self.emit(notice("warning", stream.start_warning, stream=stream.stream_id))
            while True:  # announced once every early warning is out: warn() then says one at once, after them
                with self.lock:
                    early, stream.early_warnings = stream.early_warnings, []
                    stream.announced = not early
                for line in early:
                    self.emit(notice("warning", line, stream=stream.stream_id))
                if not early:
                    break

    def loudest_level(self) -> float:
        """The highest RMS level among the open streams, for the dashboard's meter (read from its own thread)."""
        with self.lock:
            return max((stream.level for stream in self.streams.values()), default=0.0)

    def finish(self) -> None:
        """Close every stream as if its source had ended; ``run`` publishes what they hold, then returns.

        Only flags are set here, so any thread may call it; the streams are
        still drained by the worker's own thread, their only reader.
        """
        with self.lock:
            self.finishing = True
            for stream in self.streams.values():
                stream.finished = True

    def run(self, stop: threading.Event, until_all_ended: bool = False) -> None:
        """Step until ``stop`` is set, until every stream has ended (``until_all_ended``), or until finished."""
        try:
            self._loop(stop, until_all_ended)
        except Exception as error:  # noqa: BLE001 - a bug must end the monitor with a clear line, not hang it
            self.crash = f"{type(error).__name__}: {error}"

    def _loop(self, stop: threading.Event, until_all_ended: bool) -> None:
        while not stop.is_set():
            busy = self.step()
            self.last_step_at = time.monotonic()
            with self.lock:
                idle = not self.streams and (self.finishing or self.streams_started > 0)
            if (until_all_ended or self.finishing) and idle:
                break
            if not busy:
                time.sleep(0.005)
        self.publish_status(force=True)

    def step(self) -> bool:
        """One pass over every stream; True if there was work."""
        jobs: list[WindowJob] = []
        ending_streams: list[Stream] = []
        with self.lock:  # every stream this step reads is announced before anything else is said about it
            started, self._unannounced = self._unannounced, []
            streams = list(self.streams.values())  # a stream leaves them in the locked block that marks it ended
        self._announce(started)
        finished_before: dict[str, bool] = {}
        broken: list[Stream] = []  # a bug met in a stream's audio ends that stream alone (it once stopped every call)
        for stream in streams:
            finished_before[stream.stream_id] = stream.finished  # read before draining, so nothing written after is missed
            try:
                jobs += self._read(stream)
            except Exception as error:  # noqa: BLE001 - said as the stream's error; the other streams go on
                broken.append(self._broken(stream, error))
        working = [stream for stream in streams if stream not in broken]
        probabilities = batched_vad([stream.tracker for stream in working])
        for stream in working:
            try:
                jobs += stream.tracker.advance(stream.arrival_of, probabilities.get(id(stream.tracker)))
                if finished_before[stream.stream_id] and stream.ring.available() == 0:
                    jobs += stream.tracker.feed(stream.resampler.flush(), stream.arrival_of)
                    jobs += stream.tracker.finish(stream.arrival_of)
                    ending_streams.append(stream)
            except Exception as error:  # noqa: BLE001 - as above
                broken.append(self._broken(stream, error))
        jobs, inputs = self._model_inputs(jobs, broken)
        ending_streams += [stream for stream in broken if stream not in ending_streams]
        for start in range(0, len(jobs), self.config.max_batch):
            self._infer(jobs[start : start + self.config.max_batch], inputs[start : start + self.config.max_batch])
        self.queue_depth = self._windows_waiting(streams)
        self._note_behind(streams)
        for stream in streams:
            for done in stream.tracker.completed():
                self._publish_utterance(done, stream.started_at)
                stream.utterances_published += 1
        for stream in ending_streams:
            if stream.error:
                self.emit(notice("error", stream.error, stream=stream.stream_id))
            said_at_end = (stream.warning, unheard_samples(stream), overrun_loss(stream), no_utterance(stream))
            if warning := "; ".join(said for said in said_at_end if said):
                self.emit(notice("warning", warning, stream=stream.stream_id))
            ended: StreamEvent = {"type": "stream_ended", "stream": stream.stream_id, "t": round(stream.tracker.samples_seen / SAMPLE_RATE, 3)}
            self.emit(ended)
            with self.lock:  # ended streams leave the worker, so endless calls keep memory bounded
                del self.streams[stream.stream_id]
                for name, count in stream_counters(stream).items():
                    self.ended_totals[name] += count
                self.failed_streams += stream.error is not None
                stream.ended = True  # with its id free: a call waiting to resume (RTP) may now open the next stream
        self.publish_status()
        return bool(jobs or ending_streams or any(s.ring.available() for s in streams))

    def _read(self, stream: Stream) -> list[WindowJob]:
        """A step's audio of one stream, through the DC blocker and the resampler to its voice detector; the windows
        lost audio closed."""
        block = stream.read()  # what the voice detector's history has room for, at most
        block_start = stream.ring.read_position - block.size
        jobs = stream.skip_lost_audio(before=block_start)  # it came before this block
        if block.size:
            # Before the DC blocker and the resampler, whose filter states NaN would poison. A finite sample beyond any
            # audio scale (1e20 from a misbehaving driver) is no more audio: passed on, the spectrogram refused its windows.
            not_audio = ~(np.abs(block) <= MAX_AMPLITUDE)  # NaN compares false: counted here too
            if not_audio.any():
                stream.nonfinite_samples += int(np.count_nonzero(not_audio))
                block = np.where(not_audio, np.float32(0.0), block)
            canonical = stream.resampler.process(stream.dc_blocker.process(block))
            if canonical.size:
                stream.level = float(np.sqrt(np.mean(np.square(canonical))))
            stream.hear(canonical, block_start)
        return jobs

    @staticmethod
    def _broken(stream: Stream, error: Exception) -> Stream:
        """End ``stream`` with the bug it met as its error (published, and the exit status 1); the stream itself."""
        stream.error = (f"{stream.stream_id}: stopped by an internal error ({type(error).__name__}: {one_line(error)}); "
                        "what came after was not heard (please report it)")
        stream.finished = True
        return stream

    def _model_inputs(self, jobs: list[WindowJob], broken: list[Stream]) -> tuple[list[WindowJob], list[NDArray[np.float32]]]:
        """Each window's spectrogram, with the windows it is for. A stream one of whose windows cannot be computed
        ends alone with the reason, its windows dropped: raised in the shared batch, it stopped every stream."""
        failed: list[Stream] = []
        computed: list[tuple[WindowJob, NDArray[np.float32]]] = []
        for job in jobs:
            stream = self.streams[job.stream]
            if stream in failed:
                continue
            try:
                computed.append((job, spectrogram(job.audio, SAMPLE_RATE)))
            except Exception as error:  # noqa: BLE001 - as in step: said as the stream's error; the other streams go on
                failed.append(stream)
                if stream in broken:
                    continue
                if isinstance(error, AudioInputError):  # audio the feature code refuses: the input's fault, not a bug
                    stream.error, stream.finished = f"{stream.stream_id}: stopped: {one_line(error)}; what came after was not heard", True
                    broken.append(stream)
                else:
                    broken.append(self._broken(stream, error))
        kept = [(job, image) for job, image in computed if self.streams[job.stream] not in failed]
        return [job for job, _ in kept], [image for _, image in kept]

    def _windows_waiting(self, streams: list[Stream]) -> int:
        """Windows to come from audio that has arrived and not been read yet, one per hop of it: what the worker
        has still to do, 0 while it keeps up (this step's own windows are done)."""
        hop_seconds = self.config.window.hop_seconds
        return sum(stream.ring.available() // max(1, round(hop_seconds * stream.sample_rate)) for stream in streams)

    def _note_behind(self, streams: list[Stream]) -> None:
        """How far behind live audio the worker is (``behind_seconds``); a warning when that reaches
        ``BEHIND_WARNING_SECONDS``, and one when it is back under ``BEHIND_CAUGHT_UP_SECONDS`` (saying what was lost to
        overruns meanwhile, ``_note_losses``). At 300 calls on 2 cores it fell 8 s behind in 90 s without a word: only
        queue_depth grew, in windows, and /healthz said ok."""
        now = time.monotonic()
        waited = [now - since for stream in streams if stream.live and (since := stream.ring.waiting_since()) is not None]
        self.behind_seconds = max(waited, default=0.0)
        if self._behind_worst is None and self.behind_seconds >= BEHIND_WARNING_SECONDS:
            self._behind_worst = self.behind_seconds
            self.emit(notice("warning", (
                f"the monitor is {self.behind_seconds:.1f} s behind live audio: it has more streams ({len(streams)} open) than "
                "its CPU can follow (2 cores of an Intel Xeon follow 150 or more real-time calls: docs/benchmarks.md), or the "
                f"CPU is busy elsewhere; utterances come that late, and a stream {self.config.ring_seconds:g} s behind loses its "
                "oldest audio (overruns)")))
        elif self._behind_worst is not None:
            self._behind_worst = max(self._behind_worst, self.behind_seconds)
        losing = self._note_losses(streams, now)
        said = self._behind_worst is not None or self._loss_said_at is not None
        if said and not losing and self.behind_seconds < BEHIND_CAUGHT_UP_SECONDS:
            how_far = None if self._behind_worst is None else f"it was up to {self._behind_worst:.1f} s behind"
            lost = f"{self._lost_in_episode.said()} was lost to overruns meanwhile" if self._lost_in_episode.seconds else None
            self.emit(notice("warning", f"the monitor has caught up with live audio ({'; '.join(part for part in (how_far, lost) if part)})"))
            self._behind_worst, self._loss_said_at = None, None
            self._lost_since_said, self._lost_in_episode = self._new_tally("since_said"), self._new_tally("episode")

    def _note_losses(self, streams: list[Stream], now: float) -> bool:
        """Tally the live audio the streams' rings lost to overruns since the last step, and say so: at once when the
        monitor first loses some, then at a step that loses some ``LOSS_WARNING_SECONDS`` or more after the warning
        before, what was lost since it (the dashboard and the page show the status counters; each stream's end warning
        says its own). Said at a step that lost nothing, "still losing" came after losses had stopped: what is left
        unsaid then is in the caught-up warning's total. True if some was lost in this step. A stream that is not
        live (a --pace fast file) waits for room, so is left out: it cannot overrun by falling behind."""
        losing = False
        for stream in streams:
            if not stream.live:
                continue
            lost = stream.ring.overrun_samples - stream.overrun_samples_tallied
            if lost > 0:
                stream.overrun_samples_tallied = stream.ring.overrun_samples
                for tally in (self._lost_since_said, self._lost_in_episode):
                    tally.add(stream, lost / stream.sample_rate)
                losing = True
        if self._loss_said_at is None and losing:
            self.emit(notice("warning", (
                f"the monitor is losing live audio to overruns: {self._lost_since_said.said()} was lost (it fell more than "
                f"{self.config.ring_seconds:g} s behind: more streams ({len(streams)} open) than its CPU can follow); that time "
                f"still passes, unheard; said again at most once a minute while it goes on, and in each stream's end warning")))
        elif losing and self._loss_said_at is not None and now - self._loss_said_at >= LOSS_WARNING_SECONDS:
            self.emit(notice("warning", (
                f"the monitor is still losing live audio to overruns: {self._lost_since_said.said()} in the "
                f"{now - self._loss_said_at:.0f} s since it last said so, {self._lost_in_episode.said()} since it began "
                f"({streams_counted(len(streams))} open)")))
        else:
            return losing
        self._loss_said_at, self._lost_since_said = now, self._new_tally("since_said")
        return losing

    def _new_tally(self, name: str) -> LossTally:
        return LossTally(name, next(self._tally_serials))

    def _infer(self, jobs: list[WindowJob], inputs: list[NDArray[np.float32]]) -> None:
        if not jobs:
            return
        outputs = self.model.predict(np.stack(inputs))
        for job, probabilities in zip(jobs, outputs):
            self.streams[job.stream].tracker.add_output(job, probabilities)
            self.windows_done += 1
            window: Window = {
                "type": "window",
                "stream": job.stream,
                "utterance": job.utterance_id,
                "t_start": round(job.t_start, 3),
                "t_end": round(job.t_end, 3),
                "probabilities": rounded(dict(zip(EMOTIONS, probabilities.tolist()))),
            }
            self.emit(window)

    def _publish_utterance(self, done: FinishedUtterance, stream_started_at: str) -> None:
        # from the arrival of the audio that ended it in the ring: the time it waited there for the worker counts
        latency_ms = (time.monotonic() - done.closed_at) * 1000.0
        self.latencies_ms.append(latency_ms)
        self.utterances_done += 1
        utterance: UtteranceResult = {
            "type": "utterance",
            "stream": done.stream,
            "stream_started_at": stream_started_at,
            "id": done.utterance_id,
            "t_start": round(done.t_start, 3),
            "t_end": round(done.t_end, 3),
            "label": done.label.label,
            "confidence": round(done.label.confidence, 5),
            "probabilities": rounded(done.label.probabilities),
            "windows": done.label.windows,
            "latency_ms": round(latency_ms, 2),
        }
        self.emit(utterance)

    def latency_summary(self) -> dict[str, float]:
        """The status's ``latency_ms``: 0 before the first utterance (JSON has no NaN)."""
        if not self.latencies_ms:
            return {"median": 0.0, "p95": 0.0}
        return latency_summary(list(self.latencies_ms), decimals=2)

    def publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < self.config.status_interval_seconds:
            return
        self._last_status = now
        with self.lock:  # a status that counts a refusal comes after the start of every stream taken before it
            started, self._unannounced = self._unannounced, []
            streams = list(self.streams.values())
            totals = dict(self.ended_totals)
            refused_streams = self.refused_streams
        self._announce(started)
        for stream in streams:
            for name, count in stream_counters(stream).items():
                totals[name] += count
        status: Status = {
            "type": "status",
            "overruns": totals["overruns"],  # STREAM_COUNTERS, in that order
            "overrun_samples": totals["overrun_samples"],
            "input_overflows": totals["input_overflows"],
            "nonfinite_samples": totals["nonfinite_samples"],
            "refused_streams": refused_streams,
            "queue_depth": self.queue_depth,
            "behind_seconds": round(self.behind_seconds, 2),
            "latency_ms": self.latency_summary(),
            "streams": len(streams),
            "windows": self.windows_done,
            "utterances": self.utterances_done,
        }
        extra: dict[str, int] = {}  # Status's optional counters, named by their sources
        for counters in self.extra_counters:  # summed: two RTP listeners count under the same names
            for name, count in counters().items():
                extra[name] = extra.get(name, 0) + count
        message = {**status, **extra}
        self.latest_status = (message, now)  # GET /metrics reads it here, not after the outbox a held --record can stall
        self.emit(message)


def batched_vad(trackers: list[UtteranceTracker]) -> dict[int, list[float]]:
    """Speech probabilities for every pending VAD frame of every Silero-backed tracker, batched across streams.

    Round r classifies the r-th pending frame of each stream that has one, so
    each stream's recurrent state still sees its frames in order. Trackers with
    another detector are left to classify their own frames.
    """
    pending = {id(t): (t.detector, t.pending_frames()) for t in trackers if isinstance(t.detector, SileroDetector)}
    results: dict[int, list[float]] = {key: [] for key in pending}
    rounds = max((len(frames) for _, frames in pending.values()), default=0)
    for round_index in range(rounds):
        keys = [key for key, (_, frames) in pending.items() if len(frames) > round_index]
        detectors = [pending[key][0] for key in keys]
        frames = [pending[key][1][round_index] for key in keys]
        for key, probability in zip(keys, silero_batch(detectors, frames)):
            results[key].append(probability)
    return results


STREAM_COUNTERS = ("overruns", "overrun_samples", "input_overflows", "nonfinite_samples")


def unheard_samples(stream: Stream) -> str | None:
    """What a stream's warning says of the samples played as silence (``nonfinite_samples``), or None."""
    count = stream.nonfinite_samples
    if not count:
        return None
    what = "sample was" if count == 1 else "samples were"
    return f"{stream.stream_id}: {count} {what} NaN, infinite or beyond ±{MAX_AMPLITUDE:.0e} (not audio) and played as silence"


def no_utterance(stream: Stream) -> str | None:
    """What a stream that ended without an utterance says (a silent file; a call leg with one-way audio, or muted),
    or None: a run of one such file printed nothing at all, and ``classify`` refuses the same file as silent."""
    if stream.utterances_published or stream.error is not None:
        return None
    return (f"{stream.stream_id}: no utterance in its {stream.tracker.samples_seen / SAMPLE_RATE:.1f} s: the voice detector heard no speech, "
            "or none long enough to label")


def overrun_loss(stream: Stream) -> str | None:
    """What a stream's warning says of the audio its ring lost while the worker was behind (``overruns``), or None:
    at 400 calls 8222 s were lost in all, and no call was told how much of it was its own."""
    lost, overruns = stream.ring.overrun_samples, stream.ring.overruns
    if not lost:
        return None
    times = "once" if overruns == 1 else f"{overruns} times"
    return (f"{stream.stream_id}: {lost / stream.sample_rate:.2f} s of its audio was lost to overruns, {times} (the monitor "
            f"fell more than {stream.ring.capacity / stream.sample_rate:g} s behind it: more streams than its CPU can "
            "follow); that time still passed, unheard")


def stream_counters(stream: Stream) -> dict[str, int]:
    """What a stream lost, by cause; status reports totals since start, ended streams included."""
    return {
        "overruns": stream.ring.overruns,
        "overrun_samples": stream.ring.overrun_samples,
        "input_overflows": stream.input_overflows,
        "nonfinite_samples": stream.nonfinite_samples,
    }
