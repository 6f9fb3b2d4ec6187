"""Reading audio files (WAV, FLAC, anything libsndfile knows) as mono float32."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile
from numpy.typing import NDArray

from ser_stream.errors import AudioInputError, shown
from ser_stream.features import check_sample_rate, not_audio

# A channel whose running correlation with the first falls below INVERTED_CORRELATION is taken as wired inverted;
# it is taken as wired right again only once that correlation rises above RIGHTED_CORRELATION (hysteresis).
INVERTED_CORRELATION = -0.5
RIGHTED_CORRELATION = 0.0
MIX_CHUNK_FRAMES = 1 << 16  # frames mixed at once: the running sums' float64 arrays stay a few MB whatever the read


class ChannelMixer:
    """One file's or stream's channels → mono: the same samples whatever blocks they are read in.

    The mix is the mean of the channels, each the first channel's way up: one wired inverted (a common fault,
    whose mean cancels) is subtracted. A channel is taken as inverted once its correlation with the first falls
    below -0.5, and as wired right again once it rises above 0; the correlation is of sample-to-sample
    differences (a DC offset is no polarity), summed from the first frame to each frame, never over one block.
    Deciding per block ("the mean, or the louder channel where it cancels") flipped speech's polarity from block
    to block with a little noise on the line, and a whole-file read and 50 ms pipe reads heard different signals.
    """

    def __init__(self) -> None:
        self.previous_frame: NDArray[np.float64] | None = None  # the last frame mixed, for its difference to the next
        self.running_sums: NDArray[np.float64] | None = None  # per other channel: Σ d₀·dᶜ, Σ d₀², Σ dᶜ² so far
        self.inverted: NDArray[np.bool_] | None = None  # per other channel, as decided at the last frame

    def mix(self, samples: NDArray[np.floating]) -> NDArray[np.float32]:
        """The next frames, (frames, channels) or (frames,), as mono float32."""
        if samples.ndim != 2 or samples.shape[1] == 1:
            return np.asarray(samples if samples.ndim != 2 else samples[:, 0], dtype=np.float32)
        chunks = [self._mix(samples[start : start + MIX_CHUNK_FRAMES]) for start in range(0, samples.shape[0], MIX_CHUNK_FRAMES)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def _mix(self, samples: NDArray[np.floating]) -> NDArray[np.float32]:
        # NaN, infinite or huge samples are refused by name once mixed (check_samples): numpy's warnings about its sums
        # of them were printed first, with a line of this file's source
        with np.errstate(invalid="ignore", over="ignore"):
            return self._mix_checked_later(samples)

    def _mix_checked_later(self, samples: NDArray[np.floating]) -> NDArray[np.float32]:
        frames = np.asarray(samples, dtype=np.float64)
        others = frames.shape[1] - 1
        if self.previous_frame is None or self.running_sums is None or self.inverted is None:
            self.previous_frame = np.zeros(frames.shape[1])
            self.running_sums = np.zeros((1, 3, others))
            self.inverted = np.zeros(others, dtype=bool)
        steps = np.diff(frames, axis=0, prepend=self.previous_frame[None, :])
        products = np.stack([steps[:, :1] * steps[:, 1:], np.repeat(np.square(steps[:, :1]), others, axis=1), np.square(steps[:, 1:])], axis=1)
        # accumulate adds one frame after another, carrying the sums in: the same values however the frames are split
        sums = np.add.accumulate(np.concatenate([self.running_sums, products]), axis=0)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):  # a silent channel so far: no correlation, no decision
            correlation = sums[:, 0] / np.sqrt(sums[:, 1] * sums[:, 2])
        inverting, righting = correlation < INVERTED_CORRELATION, correlation > RIGHTED_CORRELATION
        frame_numbers = np.arange(frames.shape[0])[:, None]
        last_decided = np.maximum.accumulate(np.where(inverting | righting, frame_numbers, -1), axis=0)
        inverted = np.where(last_decided >= 0, np.take_along_axis(inverting, np.maximum(last_decided, 0), axis=0), self.inverted)
        self.previous_frame, self.running_sums, self.inverted = frames[-1], sums[-1:], inverted[-1]
        channels = np.asarray(samples, dtype=np.float32)
        if inverted.any():
            channels = channels.copy()
            channels[:, 1:] = np.where(inverted, -channels[:, 1:], channels[:, 1:])
        return np.asarray(channels.mean(axis=1), dtype=np.float32)


def to_mono(samples: NDArray[np.floating]) -> NDArray[np.float32]:
    """A whole file's channels as mono, (frames, channels) or (frames,) → (frames,), as ``ChannelMixer`` mixes them."""
    return ChannelMixer().mix(samples)


def check_samples(samples: NDArray[np.floating], path: str | Path) -> None:
    """Refuse what no recording holds: NaN or infinite samples, or values far beyond any audio scale."""
    if (problem := not_audio(samples, scale_hint=" (a damaged float file?)")) is not None:
        raise AudioInputError(f"{shown(path)}: {problem}")


def require_file(path: str | Path) -> None:
    """A missing path, a broken symbolic link, a folder, a pipe or device and an empty file get different one-line
    errors; each names the path."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if str(path) == "-":  # the shell's name for stdin, which a file reader cannot rewind
            raise AudioInputError("-: no such file (stdin is not read here: save the audio to a file, or pipe raw PCM to monitor --source stdin)") from None
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(path)):
            raise AudioInputError(f"{shown(path)}: a URL; nothing is fetched from the network: download the file first") from None
        if os.path.islink(path):  # ls lists it: "no such file" sent the user looking for the wrong fault
            raise AudioInputError(f"{shown(path)}: a broken symbolic link (to {shown(os.readlink(path))}, which does not exist)") from None
        raise AudioInputError(f"{shown(path)}: no such file") from None
    except OSError as error:
        raise AudioInputError(f"{shown(path)}: cannot be opened ({error.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioInputError(f"{shown(path)}: is a folder, not an audio file")
    if not stat.S_ISREG(status.st_mode):
        raise AudioInputError(f"{shown(path)}: not a regular file (a pipe or device); save the audio to a file, or pipe raw PCM to --source stdin")
    if status.st_size == 0:  # libsndfile once called it "not a readable audio file (Format not recognised.)"
        raise AudioInputError(f"{shown(path)}: the file is empty (0 bytes)")
    try:  # permissions: libsndfile would only say "System error."
        open(path, "rb").close()
    except OSError as error:
        raise AudioInputError(f"{shown(path)}: cannot be opened ({error.strerror})") from None


def file_name(path: str | Path) -> bytes:
    """The path as bytes for libsndfile, so names that are not valid UTF-8 open as they are."""
    return os.fsencode(path)


def read_audio(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Read a whole file as mono float32 in [-1, 1] with its sample rate.

    Raises ``AudioInputError`` naming the file and the reason for anything
    libsndfile cannot decode, an empty file, or non-finite samples.
    """
    require_file(path)
    try:
        with soundfile.SoundFile(file_name(path)) as file:
            sample_rate, mp3 = file.samplerate, file.format == "MP3"
            samples = np.zeros((0, file.channels), np.float32) if mp3 else file.read(dtype="float32", always_2d=True)
        if mp3:  # read to its end, which may lie past libsndfile's estimate of its length (decoded_blocks)
            samples = np.concatenate([samples, *decoded_blocks(path, WHOLE_FILE_SAMPLES)])
    except FileNotFoundError:
        raise AudioInputError(f"{shown(path)}: no such file") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise unreadable(path, error) from None
    if samples.shape[0] == 0:
        raise AudioInputError(f"{shown(path)}: contains no audio samples")
    check_sample_rate(int(sample_rate), shown(path))
    mono = to_mono(samples)
    check_samples(mono, path)
    return mono, int(sample_rate)


def audio_info(path: str | Path) -> Any:
    """``soundfile.info`` with the same one-line errors as ``read_audio``; refuses empty files."""
    require_file(path)
    try:
        info = soundfile.info(file_name(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise unreadable(path, error) from None
    if info.frames == 0 or (info.format == "FLAC" and flac_holds_no_frames(path)):
        promised = "" if info.frames == 0 or unknown_length(info.frames) else (
            f", though its header promises {info.frames / info.samplerate:.2f} s of audio: damaged or cut short")
        raise AudioInputError(f"{shown(path)}: contains no audio samples{promised}")
    check_sample_rate(int(info.samplerate), shown(path))
    return info


def flac_holds_no_frames(path: str | Path) -> bool:
    """Whether a FLAC file ends where its metadata does (``ffmpeg -t 0 … -f flac -`` writes one): libsndfile then
    fails its first read ("Internal psf_fseek() failed.") as it would for damage."""
    try:
        with open(file_name(path), "rb") as file:
            if file.read(4) != b"fLaC":
                return False
            while len(header := file.read(4)) == 4:  # each metadata block: last-block flag and type, 24-bit length
                file.seek(int.from_bytes(header[1:4], "big"), os.SEEK_CUR)
                if header[0] & 0x80:
                    return file.tell() == os.fstat(file.fileno()).st_size
    except OSError:
        pass
    return False


def ogg_holds_no_samples(path: str | Path) -> bool:
    """Whether an Ogg file is whole pages of which none ends a packet of audio (each granule position 0, or -1
    where no packet ends): an Opus file of its two header pages alone (``ffmpeg -t 0``, soundfile writing nothing),
    which libsndfile calls "malformed"."""
    try:
        with open(file_name(path), "rb") as file:
            size, position, pages = os.fstat(file.fileno()).st_size, 0, 0
            while position < size:
                header = file.read(27)
                if len(header) < 27 or header[:4] != b"OggS" or int.from_bytes(header[6:14], "little", signed=True) > 0:
                    return False
                segments = file.read(header[26])  # the lengths of the page's body's segments
                if len(segments) < header[26]:
                    return False
                position, pages = file.seek(sum(segments), os.SEEK_CUR), pages + 1
            return pages > 0 and position == size
    except OSError:
        return False


def skip_id3v2_tags(file: BinaryIO) -> None:
    """Move ``file`` past the ID3v2 tags at its start (each header, its four 7-bit size bytes, a footer if flagged)."""
    while len(header := file.read(10)) == 10 and header[:3] == b"ID3" and all(byte < 0x80 for byte in header[6:10]):
        size = sum(byte << 7 * (3 - index) for index, byte in enumerate(header[6:10]))
        file.seek(size + (10 if header[5] & 0x10 else 0), os.SEEK_CUR)
    file.seek(-len(header), os.SEEK_CUR)


def mp3_holds_no_frames(path: str | Path) -> bool:
    """Whether an MP3 file holds no audio frame: nothing after its ID3v2 tags but an ID3v1 tag, or a first frame
    whose Xing or Info header (LAME's, ffmpeg's, libsndfile's) counts 0 frames (``ffmpeg -t 0`` writes one).
    libsndfile cannot open either, and says the file does not exist."""
    try:
        with open(file_name(path), "rb") as file:
            skip_id3v2_tags(file)
            left = os.fstat(file.fileno()).st_size - file.tell()
            first = file.read(4 + 2 + 32 + 12)  # a frame header, its CRC, side information (at most 32 bytes), Xing
    except OSError:
        return False
    if left == 0 or (left == 128 and first[:3] == b"TAG"):
        return True
    if len(first) < 4 or first[0] != 0xFF or first[1] & 0xE0 != 0xE0 or (first[1] >> 1) & 3 != 1:  # Layer III
        return False
    version, mono = (first[1] >> 3) & 3, first[3] >> 6 == 3  # version 3: MPEG-1; 2 and 0: MPEG-2 and 2.5
    side_information = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    at = 4 + (0 if first[1] & 1 else 2) + side_information
    counted = first[at : at + 4] in (b"Xing", b"Info") and int.from_bytes(first[at + 4 : at + 8], "big") & 1
    return bool(counted) and len(first) >= at + 12 and first[at + 8 : at + 12] == bytes(4)


def holds_no_audio(path: str | Path) -> bool:
    """Whether a file libsndfile would not open is a FLAC, Ogg or MP3 file that holds no audio, by its own bytes."""
    try:
        with open(file_name(path), "rb") as file:
            start = file.read(4)
    except OSError:
        return False
    if start == b"fLaC":
        return flac_holds_no_frames(path)
    if start == b"OggS":
        return ogg_holds_no_samples(path)
    if start[:3] == b"ID3" or (len(start) >= 2 and start[0] == 0xFF and start[1] & 0xE0 == 0xE0):  # a frame's sync
        return mp3_holds_no_frames(path)
    return False


# The step of each format coarser than 16 bits, as a fraction of full scale: rounding (and its dither) at that size
# is not sound. Near zero, in 16-bit terms, μ-law decodes to …, -8, 0, 8, … (step 8) and A-law, which has no zero
# code, to …, -24, -8, 8, 24, … (step 16): a silent A-law line flickers ±8, which a step of 8 took for sound.
ROUNDING_STEPS = {"PCM_U8": 2.0**-7, "PCM_S8": 2.0**-7, "ULAW": 2.0**-12, "ALAW": 2.0**-11}


def rounding_floor(info: Any) -> float:
    """The mean square under which a file's frames are its format's rounding noise and dither, not sound."""
    return subtype_floor(info.subtype)


def subtype_floor(subtype: str) -> float:
    """``rounding_floor`` of a libsndfile subtype (``PCM_16``, ``ULAW``…): half the square of its step; 16-bit's
    (``windows.TRIM_FLOOR``) for every finer or compressed format."""
    step = ROUNDING_STEPS.get(subtype, 2.0**-15)
    return step * step / 2


TRUNCATED_DATA = re.compile(r"^data : (\d+) \(should be (\d+)\)$", re.M)  # libsndfile's log of a WAV cut short
BLOCK_ALIGN = re.compile(r"^\s*Block Align\s*: (\d+)$", re.M)
STREAMED_DATA_SIZE = 0x7FFFF000  # a data size this large is a streaming writer's placeholder (0x7FFFFFFF, 0xFFFFFFFF)
MISSING_SECONDS = 0.1  # less missing is a cut inside the last frame or two, not a recording cut short
UNDECODED_SHARE = 0.05


def truncation(path: str | Path, info: Any) -> str | None:
    """What a WAV whose header promises more audio than the file holds is missing, for a warning; else None.

    libsndfile reads what is there without a word: a recording cut short by a crash or a copy was once
    classified on its first third as if whole.
    """
    found, align = TRUNCATED_DATA.search(info.extra_info), BLOCK_ALIGN.search(info.extra_info)
    if found is None or align is None or int(align.group(1)) == 0:
        return None
    if int(found.group(1)) >= STREAMED_DATA_SIZE:  # a WAV written to a pipe (ffmpeg, arecord): no size was known
        return None
    promised, held = (int(found.group(index)) // int(align.group(1)) / info.samplerate for index in (1, 2))
    if promised - held < MISSING_SECONDS:
        return None
    return f"{shown(path)}: truncated: its header promises {promised:.2f} s of audio, the file holds {held:.2f} s; only that was heard"


def unknown_length(frames: int) -> bool:
    """Whether libsndfile's frame count says it does not know (2**63 - 1: a FLAC written to a pipe)."""
    return frames >= 2**62


def undecoded(path: str | Path, info: Any, decoded_frames: int) -> str | None:
    """What a file could not decode of the length its header gives (a compressed one damaged, a WAV cut while it was
    read), for a warning.

    libsndfile stops at damage or a cut without a word: a half MP3 was once labelled on its first half as if whole.
    Encoders' padding and MP3 length estimates differ by a little, so only a shortfall of 5 % (and 0.1 s) counts.
    """
    if info.format == "OGG" and not ogg_stream_ended(path):  # its length is its last page's: cut, it promises no more
        return (
            f"{shown(path)}: damaged or cut short: it stops before the Ogg page that ends its stream (an Ogg file gives its "
            f"length only there); {decoded_frames / info.samplerate:.2f} s could be decoded; only that was heard"
        )
    if info.frames <= 0 or unknown_length(info.frames):
        return None
    missing = info.frames - decoded_frames
    # A WAV's length is exact (one already cut short when opened is ``truncation``'s, its frames what it holds): a
    # shortfall is the file cut while it was read, which once went unsaid.
    enough = MISSING_SECONDS * info.samplerate if info.format == "WAV" else max(UNDECODED_SHARE * info.frames, MISSING_SECONDS * info.samplerate)
    if missing < enough:
        return None
    if info.format == "MP3" and length_is_estimated(path):  # promises nothing: 65 s was once said of 6 s, as "damaged"
        return None
    return (
        f"{shown(path)}: damaged or cut short: its header promises {info.frames / info.samplerate:.2f} s of audio, "
        f"{decoded_frames / info.samplerate:.2f} s could be decoded; only that was heard"
    )


def _ogg_crc_table() -> list[int]:
    """Each byte's CRC-32 by Ogg's polynomial, for ``ogg_page_checksum`` to take a page a byte at a time."""
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


OGG_CRC_TABLE = _ogg_crc_table()


def ogg_page_checksum(page: bytes) -> bytes:
    """The checksum an Ogg page's header holds for ``page`` (CRC-32, polynomial 0x04C11DB7, unreflected, over the page
    with its checksum field zeroed), as its 4 little-endian bytes: a page cut short and followed by other bytes (a
    tag) fills up to its length, but not to its checksum."""
    crc, table = 0, OGG_CRC_TABLE
    for byte in page[:22] + bytes(4) + page[26:]:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc.to_bytes(4, "little")


OGG_PAGE_MOST_BYTES = 27 + 255 + 255 * 255  # a page's header, segment table and body at their largest
# After its last page a complete Ogg file may hold bytes that are no page: a tagger's ID3v1 tag (128 bytes), an APE
# tag, a copy's zero padding. The end-of-stream page is looked for this far before the file's end beyond a page.
OGG_TRAILING_MOST_BYTES = 64 * 1024


def ogg_stream_ended(path: str | Path) -> bool:
    """Whether an Ogg file holds the page that ends its stream whole, as its last page: one flagged end-of-stream, its
    body all there, after which no page begins (bytes that are no page, such as an appended ID3v1 tag or zeros, may
    follow: it was whole, and was warned about as cut). libsndfile takes an Ogg's length from its last page, so one
    cut short (mid-page, or at a page's end) was classified as whole, without a word; a file that cannot be read again
    is left to the reads that follow."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - OGG_PAGE_MOST_BYTES - OGG_TRAILING_MOST_BYTES))
            tail = file.read()
    except OSError:
        return True
    start = tail.rfind(b"OggS")
    while start >= 0:  # the last page whole decides; "OggS" inside a packet, or a page cut short, fails its checksum
        header = tail[start : start + 27]
        if len(header) == 27 and header[4] == 0:
            segments = tail[start + 27 : start + 27 + header[26]]
            end = start + 27 + header[26] + sum(segments)
            if len(segments) == header[26] and end <= len(tail) and ogg_page_checksum(tail[start:end]) == header[22:26]:
                return bool(header[5] & 0x04) and b"OggS" not in tail[end:]  # after it, no page (a later one cut short)
        start = tail.rfind(b"OggS", 0, start)
    return False


def read_until_damage(path: str | Path, info: Any, error: AudioInputError) -> tuple[NDArray[np.float32], int]:
    """A compressed file (``info``: its ``audio_info``) that fails part-way (a FLAC cut short: "lost sync"), read up
    to the damage (``decoded_blocks``); ``error`` (the whole read's) again if nothing before it decodes, or if it is
    a WAV."""
    if info.format == "WAV":
        raise error
    try:
        blocks = list(decoded_blocks(path, max(1, info.frames)))
    except (soundfile.LibsndfileError, RuntimeError):
        raise error from None
    if not blocks:
        raise error
    mono = to_mono(np.concatenate(blocks))
    check_samples(mono, path)
    return mono, int(info.samplerate)


def narrow_band(path: str | Path, sample_rate: int) -> str | None:
    """A warning for audio sampled below 8 kHz: the model's picture spans 0–4 kHz, and the top of it is then black."""
    if sample_rate >= 8000:
        return None
    return (
        f"{shown(path)}: sampled at {sample_rate} Hz, so it holds nothing above {sample_rate // 2} Hz of the 0–4000 Hz "
        "the model hears; its label may differ from the same speech recorded at 8 kHz or more"
    )


# The memory a file is read in is counted in samples, all channels counted, as seconds of 16 kHz mono, whatever
# its rate and channel count: a file of at most WHOLE_FILE_SECONDS of that (38 MB of float32; 100 s of 48 kHz
# stereo) may be decoded in one read; a longer one is read in blocks (classify, clips).
MEMORY_BUDGET_RATE = 16000
WHOLE_FILE_SECONDS = 600.0
WHOLE_FILE_SAMPLES = int(WHOLE_FILE_SECONDS * MEMORY_BUDGET_RATE)
READ_BUDGET_SECONDS = 30.0  # a block read holds at most this much of 16 kHz mono's samples (1.9 MB of float32)


def block_frames(channels: int, block_seconds: float = READ_BUDGET_SECONDS) -> int:
    """Frames per block read of a file of ``channels``: ``block_seconds`` of 16 kHz mono's samples, all channels
    counted. Counted in frames, a read grew with the channel count (64 channels at 1 MHz: 256 MB a read)."""
    return max(1, int(block_seconds * MEMORY_BUDGET_RATE / channels))
# libsndfile 1.2's MP3 decoder garbles audio at the joins of successive reads (by up to a fifth of full scale
# at 1 s reads, printing libmpg123 errors), so an MP3 of at most WHOLE_FILE_SAMPLES is decoded in one read.
LONG_MP3_READ_SECONDS = 60.0  # larger MP3s: few, long reads (a join a minute)


def feed_pipe(path: str | Path, write_end: int) -> None:
    """Copy a file into a pipe's ``write_end`` less any ID3v2 tags at its start, then close it; stop quietly once the
    reader has closed its end. libsndfile takes no tag larger than a few kilobytes (cover art) from a pipe."""
    try:
        with open(write_end, "wb") as pipe, open(file_name(path), "rb") as source:
            skip_id3v2_tags(source)
            shutil.copyfileobj(source, pipe)
    except OSError:  # BrokenPipeError: the reader read what it wanted
        pass


class PipedFile:
    """A file handed to libsndfile through a pipe that a thread of its own fills, so that libsndfile opens it as it
    opens a pipe: an MP3 is then read to its end, never seeked (``piped_if_estimated``)."""

    def __init__(self, path: str | Path) -> None:
        self.read_end, write_end = os.pipe()
        self.feeder = threading.Thread(target=feed_pipe, args=(path, write_end), name="audio-pipe", daemon=True)
        self.feeder.start()
        try:
            self.file = soundfile.SoundFile(self.read_end, closefd=False)
        except BaseException:
            self.close_pipe()
            raise

    def close(self) -> None:
        self.file.close()
        self.close_pipe()

    def close_pipe(self) -> None:
        os.close(self.read_end)  # the feeder's next write fails, and it stops
        self.feeder.join()


def piped_if_estimated(path: str | Path) -> PipedFile | None:
    """An MP3 whose length no Xing, Info or VBRI header gives, opened through a pipe (``PipedFile``), or None.

    From a file, libsndfile takes libmpg123's estimate of such a length (the file's size over its first frame's
    bitrate) and reads no further: 3 s of a 6 s file joined from two bitrates was heard, the rest dropped unsaid.
    Through a pipe it knows no length and reads to the end. None as well for an MP3 that does not open so."""
    try:
        piped = PipedFile(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None
    if unknown_length(piped.file.frames):
        return piped
    piped.close()
    return None


def length_is_estimated(path: str | Path) -> bool:
    """Whether an MP3's length (``info.frames``) is only libmpg123's estimate, which the audio may fall short of."""
    piped = piped_if_estimated(path)
    if piped is None:
        return False
    piped.close()
    return True


def decoded_blocks(path: str | Path, frames_per_read: int) -> Iterator[NDArray[np.float32]]:
    """A file's samples as [frames, channels] float32, ``frames_per_read`` at a time, as far as they decode.

    A compressed file damaged part-way (a FLAC cut short: "lost sync") ends at the damage: the read that failed is
    made again a quarter second at a time, and the quarter second that fails gives what it decoded
    (``decoded_before_failure``). Callers say how much decoded (``undecoded``).
    A WAV that fails to read, or a file of which not a frame decodes, raises libsndfile's error.
    Not ``soundfile.blocks``: it hands on every block whole, whatever the decoder gave, and past the end of a
    damaged MP3 or OGG (whose header promises more) it once handed on uninitialised memory as audio, noise or NaN.
    """
    file = soundfile.SoundFile(file_name(path))
    piped = None
    try:
        if file.format == "MP3" and (piped := piped_if_estimated(path)) is not None:
            file.close()
            # A pipe is never seeked: its reads join seamlessly (a second at a time, bit for bit as one whole read),
            # so a read is no larger than a block; no length is known to size one by.
            file, frames_per_read = piped.file, min(frames_per_read, block_frames(piped.file.channels))
        if file.seekable():
            file.seek(0)  # as soundfile.read does: libmpg123 then decodes bit for bit as one whole read would
        step = max(1, file.samplerate // 4)
        # A FLAC written to a pipe knows no length (2**63 - 1 frames): its last read fails at the real end, so it is
        # read in steps from the start, the last of which gives what it decoded.
        read, position = step if unknown_length(file.frames) and piped is None else max(1, frames_per_read), 0
        while True:
            try:
                samples = file.read(read, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError):
                if file.format == "WAV" or (piped is not None and position == 0):
                    raise
                if piped is not None:
                    return  # the damage: what came before is the file
                file = moved_back(file, path, position, step)
                if read > step:
                    read = step
                    continue
                samples, failed = decoded_before_failure(file, read)
                if failed and not len(samples) and position == 0:
                    raise
                if len(samples):
                    position += len(samples)
                    yield samples
                if failed:
                    return  # the end, or the damage: what came before is the file
                continue
            if not len(samples):
                return
            position += len(samples)
            yield samples
    finally:
        file.close()
        if piped is not None:
            piped.close()


def decoded_before_failure(file: soundfile.SoundFile, frames: int) -> tuple[NDArray[np.float32], bool]:
    """A read of ``frames`` from ``file``'s position that failed once, made again: the frames it decoded, and whether
    it failed again.

    soundfile seeks to its new position after each read, and a FLAC whose header gives no length, or more than it
    holds, cannot be seeked to its real end: the read that reaches it raises once its frames are decoded, and its
    last quarter second (up to 0.25 s) was dropped unsaid. They are decoded into frames filled with NaN, which no
    decoder writes, so the frames before the first NaN are those it decoded.
    """
    decoded = np.full((frames, file.channels), np.nan, dtype=np.float32)
    try:
        return file.read(frames, out=decoded), False
    except (soundfile.LibsndfileError, RuntimeError):
        written = np.isnan(decoded).any(axis=1)
        return decoded[: int(np.argmax(written)) if written.any() else frames], True


def moved_back(file: soundfile.SoundFile, path: str | Path, position: int, step: int) -> soundfile.SoundFile:
    """``file`` at ``position`` again after a read failed; where its decoder can no longer seek (a FLAC promising more
    than it holds: "Internal psf_fseek() failed", once an error line for the whole file), the file opened again and
    read up to it."""
    try:
        file.seek(position)
        return file
    except (soundfile.LibsndfileError, RuntimeError):
        file.close()
    reopened = soundfile.SoundFile(file_name(path))
    left = position
    while left > 0:
        skipped = len(reopened.read(min(step, left), dtype="float32", always_2d=True))  # decoded once already
        if not skipped:
            break
        left -= skipped
    return reopened


def sample_blocks(path: str | Path, block_frames: int, info: Any = None) -> Iterator[NDArray[np.float32]]:
    """A file's samples as [frames, channels] float32 blocks of at most ``block_frames``, as far as they decode;
    ``info``: its ``audio_info`` if the caller has it (read again otherwise)."""
    info = audio_info(path) if info is None else info
    if info.format != "MP3":
        yield from decoded_blocks(path, block_frames)
        return
    # One read of at most WHOLE_FILE_SAMPLES frames takes a small MP3 whole (libsndfile sizes it to what is left).
    whole = info.frames * info.channels <= WHOLE_FILE_SAMPLES
    read = WHOLE_FILE_SAMPLES if whole else max(block_frames, int(LONG_MP3_READ_SECONDS * info.samplerate))
    for samples in decoded_blocks(path, read):
        for start in range(0, samples.shape[0], block_frames):
            yield samples[start : start + block_frames]


def mono_blocks(path: str | Path, block_frames: int, info: Any = None) -> Iterator[NDArray[np.float32]]:
    """``sample_blocks`` mixed to mono as ``mixed_blocks`` mixes them."""
    return mixed_blocks(sample_blocks(path, block_frames, info), path)


def mixed_blocks(blocks: Iterable[NDArray[np.floating]], name: str | Path) -> Iterator[NDArray[np.float32]]:
    """Blocks of samples mixed to mono by one ``ChannelMixer`` for them all (they mix as the whole recording would),
    each checked to be audio (``AudioInputError`` naming ``name`` at the first that is not): a file's, or an array's."""
    mixer = ChannelMixer()
    for samples in blocks:
        mono = mixer.mix(samples)
        check_samples(mono, name)
        yield mono


# Other files libsndfile reads, by their first bytes (up to 12): each once played as PCM on stdin, its header as noise.
OTHER_MAGIC = {
    b"caff\x00\x01\x00\x00": "CAF (Core Audio Format)",  # version 1, flags 0: either endianness of audio
    b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb": "Wave64 (W64)",  # the first 12 bytes of its 'riff' GUID
    b"NIST_1A\n": "NIST SPHERE",
}


def refused_file_format(start: bytes) -> str | None:
    """What a stream's first 12 bytes say it is, in words, if an audio file format stdin does not take: FLAC, Ogg, MP3
    with an ID3v2 tag, AIFF, AU, CAF, Wave64, NIST SPHERE, or one libsndfile does not read at all (``unread_format``);
    else None. Each is checked in full: raw PCM starts so by chance one time in 2^32 or fewer.
    (libsndfile tells them apart from a buffer too, but its MP3 probe prints libmpg123's notes on stderr.)"""
    if start[:4] == b"fLaC":
        return "FLAC"
    # Sun/NeXT AU: '.snd' (big-endian; 'dns.' little-endian) and where its audio starts, 24 bytes in or further
    if len(start) >= 8 and ((start[:4] == b".snd" and int.from_bytes(start[4:8], "big") >= 24)
                            or (start[:4] == b"dns." and int.from_bytes(start[4:8], "little") >= 24)):
        return "AU (Sun/NeXT)"
    if (other := next((name for magic, name in OTHER_MAGIC.items() if start.startswith(magic)), None)) is not None:
        return other
    if start[:5] == b"OggS\x00":  # version 0, the only one
        return "Ogg (Vorbis, Opus…)"
    # ID3v2: version 2 to 4, revision not 0xFF, a tag size of four 7-bit bytes
    if len(start) >= 10 and start[:3] == b"ID3" and start[3] in (2, 3, 4) and start[4] != 0xFF and all(byte < 0x80 for byte in start[6:10]):
        return "MP3"
    if start[:4] == b"FORM" and start[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF" if start[8:12] == b"AIFF" else "AIFF-C"
    return unread_format(start)


# Formats libsndfile does not read, by the bytes they start with: what phones, call recorders and browsers write.
UNREAD_MAGIC = {b"#!AMR": "AMR", b"\x1aE\xdf\xa3": "WebM/Matroska", b"0&\xb2u\x8ef\xcf\x11": "WMA (ASF)"}


def unread_format(start: bytes) -> str | None:
    """The format libsndfile does not read that a file's first 12 bytes say it is, in words; else None."""
    if start[4:8] == b"ftyp":  # an ISO media file's first box (MP4, M4A, 3GP)
        return "MP4/M4A (AAC, ALAC…)"
    return next((name for magic, name in UNREAD_MAGIC.items() if start.startswith(magic)), None)


def unreadable(path: str | Path, error: Exception) -> AudioInputError:
    """libsndfile's complaint about a file, cut to the one-line reason."""
    reason = str(error).split("\n")[0]
    if "Error opening" in reason and ":" in reason:
        reason = reason.rsplit(":", 1)[-1].strip()
    if reason.startswith("File does not exist or is not a regular file") and os.path.isfile(file_name(path)):
        reason = "empty, damaged, or a format libsndfile cannot read"  # what libsndfile says of an MP3 it cannot open
    if reason == "samplerate must be specified":  # what soundfile says of a .raw/.pcm name: it would read headerless PCM
        reason = "headerless PCM, whose rate and format nothing says; give it a WAV or FLAC header, or pipe it to monitor --source stdin --rate R"
    if holds_no_audio(path):  # as an empty WAV or Ogg Vorbis file, which libsndfile opens, is said to
        return AudioInputError(f"{shown(path)}: contains no audio samples")
    try:
        with open(path, "rb") as file:
            file_format = unread_format(file.read(12))
    except OSError:
        file_format = None
    if file_format is not None:  # named, with the way to a format that is read, as stdin names a FLAC piped in
        given = Path(os.fsdecode(path))
        wav = given.with_suffix(".wav") if given.suffix.lower() != ".wav" else given.with_name(f"{given.stem}-decoded.wav")
        return AudioInputError(
            f"{shown(path)}: the file is {file_format}, a format libsndfile does not read (it reads WAV, FLAC, OGG, MP3…); "
            f"convert it first (ffmpeg -i {shlex.quote(shown(path))} -ac 1 {shlex.quote(shown(wav))})"
        )
    return AudioInputError(f"{shown(path)}: not a readable audio file ({reason})")
