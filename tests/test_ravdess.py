"""The RAVDESS loader: labels from 7-part names, bad names reported by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ser_stream.errors import DatasetError
from training.ravdess import parse_name, scan


def test_name_parts_become_labels():
    clip = parse_name("Actor_12/03-01-05-02-01-02-12.flac")
    assert (clip.emotion, clip.intensity, clip.statement, clip.repetition, clip.actor) == ("angry", 2, 1, 2, 12)
    assert clip.label_index == 4


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("03-01-05-02-01-02.wav", "expected 7"),
        ("03-01-05-02-01-02-12-01.wav", "expected 7 dash-separated fields, found 8"),
        ("03-01-09-01-01-01-01.wav", "emotion 09 is outside"),
        ("03-01-0x-01-01-01-01.wav", "not two digits"),
        ("03-01-5-01-01-01-01.wav", "emotion field '5' is not two digits"),
        ("03-01-0\u0665-01-01-01-01.wav", "not two digits"),  # an Arabic-Indic five: a digit to str.isdigit and int()
        ("03-01-01-02-01-01-01.wav", "neutral has no strong"),
        ("03-01-05-01-01-01-25.flac", "actor 25"),
        ("03-01-05-01-01-01-01.mp3", "not a WAV or FLAC"),
    ],
)
def test_bad_names_are_reported_with_the_reason(name, reason):
    with pytest.raises(DatasetError, match=reason) as error:
        parse_name(name)
    assert Path(name).name in str(error.value)


def test_all_24_ravdess_actors_and_extensions_in_capitals_are_read_as_clips(tmp_path):
    """The shared copy holds actors 1-20 of the 24; the whole data set, or a copy from a system that names files in
    capitals, is read the same."""
    assert parse_name("Actor_24/03-01-05-01-01-01-24.wav").actor == 24
    (tmp_path / "Actor_01").mkdir()
    for name in ("03-01-03-01-01-01-01.WAV", "03-01-04-01-01-01-01.Flac"):
        (tmp_path / "Actor_01" / name).write_bytes(b"")
    clips, problems = scan(tmp_path)
    assert [clip.path.name for clip in clips] == ["03-01-03-01-01-01-01.WAV", "03-01-04-01-01-01-01.Flac"] and problems == []


def test_a_name_that_is_not_utf8_is_shown_with_its_bytes_as_classify_shows_it():
    """It was shown as Python's repr of the surrogate escape ('caf\\udce9.wav'), not as the other tools show it."""
    import os

    with pytest.raises(DatasetError) as error:
        parse_name(os.fsdecode(b"Actor_01/caf\xe9.wav"))
    assert str(error.value) == "caf\\xe9.wav: expected 7 dash-separated fields, found 1"


def test_scan_reports_unparseable_files_and_keeps_going(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "03-01-03-01-01-01-01.wav").write_bytes(b"")
    (tmp_path / "Actor_01" / "03-01-03-01-01-01-01.WAV.flac").write_bytes(b"")
    (tmp_path / "Actor_01" / "03-02-03-01-01-01-01.wav").write_bytes(b"")  # song: skipped quietly
    (tmp_path / "notes.txt").write_text("not audio")
    clips, problems = scan(tmp_path)
    assert [c.path.name for c in clips] == ["03-01-03-01-01-01-01.wav"]
    # with its folder: take2.wav in two actors' folders once read as the same file named twice
    assert problems == [f"{tmp_path / 'Actor_01' / '03-01-03-01-01-01-01.WAV.flac'}: actor field '01.WAV' is not two digits"]


def test_scan_names_a_clip_in_another_format_and_a_link_to_nothing_but_not_other_files(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "03-01-03-01-01-01-01.wav").write_bytes(b"")
    (tmp_path / "Actor_01" / "03-01-04-01-01-01-01.mp3").write_bytes(b"")  # once left out without a word
    (tmp_path / "Actor_01" / "03-01-05-01-01-01-01.wav").symlink_to(tmp_path / "moved-away.wav")
    (tmp_path / "Actor_01" / "cover.mp3").write_bytes(b"")  # not a clip's name: nothing to say
    (tmp_path / "Actor_01" / "03-01-06-01-01-01-01.wav").mkdir()  # a folder, not a link: nothing to say either
    (tmp_path / "notes").symlink_to(tmp_path / "gone")
    clips, problems = scan(tmp_path)
    assert [c.path.name for c in clips] == ["03-01-03-01-01-01-01.wav"]
    assert problems == [
        f"{tmp_path}/Actor_01/03-01-04-01-01-01-01.mp3: not a WAV or FLAC file; convert it (soundfile reads both)",
        f"{tmp_path}/Actor_01/03-01-05-01-01-01-01.wav: a link to nothing ({tmp_path}/moved-away.wav)",
    ]


def test_the_shared_dataset_has_60_clips_for_each_of_20_actors(ravdess):
    clips, problems = scan(ravdess)
    assert problems == []
    assert len(clips) == 1200
    assert sorted({c.actor for c in clips}) == list(range(1, 21))


def test_an_actor_folder_that_is_a_link_is_scanned_once_and_a_link_back_up_the_tree_is_not_followed_round(tmp_path):
    """A symbolically linked actor folder was once skipped without a word."""
    (tmp_path / "elsewhere" / "Actor_02").mkdir(parents=True)
    (tmp_path / "elsewhere" / "Actor_02" / "03-01-03-01-01-01-02.wav").write_bytes(b"")
    data = tmp_path / "data"
    (data / "Actor_01").mkdir(parents=True)
    (data / "Actor_01" / "03-01-03-01-01-01-01.wav").write_bytes(b"")
    (data / "Actor_02").symlink_to(tmp_path / "elsewhere" / "Actor_02")
    (data / "Actor_01" / "loop").symlink_to(data)
    clips, problems = scan(data)
    assert [c.path for c in clips] == [data / "Actor_01" / "03-01-03-01-01-01-01.wav", data / "Actor_02" / "03-01-03-01-01-01-02.wav"]
    assert problems == []


@pytest.mark.parametrize("second", ["backup/03-01-03-01-01-01-01.wav", "Actor_01/03-01-03-01-01-01-01.flac"], ids=["two-folders", "wav-and-flac"])
def test_the_same_recording_found_twice_is_refused_in_one_line_naming_both(tmp_path, second):
    """Counted twice, one recording could train and test at once."""
    first = tmp_path / "Actor_01" / "03-01-03-01-01-01-01.wav"
    first.parent.mkdir()
    first.write_bytes(b"")
    (tmp_path / second).parent.mkdir(exist_ok=True)
    (tmp_path / second).write_bytes(b"")
    with pytest.raises(DatasetError) as refused:
        scan(tmp_path)
    named = sorted([first, tmp_path / second])
    assert str(refused.value) == f"{named[1]}: the same RAVDESS recording as {named[0]}; keep one of them"
