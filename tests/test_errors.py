"""The one-line error helpers and the bounded memory of recent keys (ser_stream/errors.py)."""

from __future__ import annotations

import pytest

from ser_stream.errors import RecentKeys, StreamRefused, host_port, one_line, port_number, shown


def test_a_name_with_a_control_character_is_shown_whole_in_quoted_ascii_and_an_empty_name_as_two_quotes():
    """Escaped, a name is escaped whole: a look-alike letter (Cyrillic а for Latin a) beside a line break is shown as
    its code too, not left to pass for the other; an empty name is shown as '' rather than as nothing at all."""
    assert shown("call.wav") == "call.wav" and shown("café.wav") == "café.wav"
    assert shown("p\u0430ypal\n.wav") == "'p\\u0430ypal\\n.wav'"
    assert shown("") == "''"
    assert shown("caf\udce9.wav") == "caf\\xe9.wav"  # bytes that are not UTF-8: as classify --json names them


def test_an_address_is_written_with_an_ipv6_host_in_brackets_whether_or_not_it_abbreviates_zeros():
    assert host_port("127.0.0.1", 5004) == "127.0.0.1:5004" and host_port("monitor.example", 80) == "monitor.example:80"
    assert host_port("::1", 5004) == "[::1]:5004"
    assert host_port("2001:db8:1:2:3:4:5:6", 5004) == "[2001:db8:1:2:3:4:5:6]:5004"


@pytest.mark.parametrize("text, port", [("0", 0), ("5004", 5004), ("65535", 65535), ("65536", None), ("99999", None), ("100000", None),
                                        ("", None), ("-1", None), ("+80", None), ("5²", None), ("٥٠٠٤", None), ("5" * 5000, None)])
def test_a_port_is_ascii_digits_from_0_to_65535_and_anything_else_is_none(text, port):
    assert port_number(text) == port


def test_an_exceptions_one_line_is_its_first_line_of_text_escaped_or_else_its_types_name():
    assert one_line(OSError("disk full\nwhile writing call.wav")) == "disk full"
    assert one_line(ValueError("\nbad header\nmore")) == "bad header"  # a message that starts on a new line
    assert one_line(ValueError("a\x1b[2Jb")) == "'a\\x1b[2Jb'"  # a terminal control is not passed to the terminal
    assert one_line(MemoryError()) == "MemoryError" and one_line(ValueError(" \n ")) == "ValueError"


def test_a_refused_streams_message_quotes_its_id():
    """The id is quoted (and escaped): an empty id or one with spaces reads apart from the reason."""
    assert str(StreamRefused("", "its id is still active")) == "stream '' refused: its id is still active"
    assert str(StreamRefused("call 7", "at --max-streams 2")) == "stream 'call 7' refused: at --max-streams 2"


def test_a_key_is_remembered_for_less_than_its_seconds_and_forgotten_at_them():
    keys = RecentKeys(seconds=10.0, capacity=5)
    keys.note("a", 0.0)
    assert keys.remembers("a", 9.999) and keys.noted_at("a") == 0.0
    assert not keys.remembers("a", 10.0) and keys.noted_at("a") is None


def test_every_key_past_its_seconds_is_forgotten_at_once_making_room_for_as_many():
    keys = RecentKeys(seconds=10.0, capacity=3)
    for key, now in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        keys.note(key, now)
    assert not keys.has_room()
    keys.note("d", 3.0)  # no room: not noted
    assert not keys.remembers("d", 3.0)
    assert not keys.remembers("x", 11.5)  # a and b are forgotten together
    assert keys.has_room() and keys.oldest_noted_at() == 2.0
    keys.note("e", 11.5)
    keys.note("f", 11.5)
    assert not keys.has_room() and [key for key in "abcdef" if keys.noted_at(key) is not None] == ["c", "e", "f"]


def test_a_key_noted_again_is_renewed_and_so_forgotten_after_those_noted_since():
    keys = RecentKeys(seconds=10.0, capacity=3)
    keys.note("a", 0.0)
    keys.note("b", 1.0)
    keys.note("a", 5.0)  # renewed: now the newest
    assert keys.oldest_noted_at() == 1.0
    assert not keys.remembers("b", 11.0) and keys.remembers("a", 11.0)  # b goes at its time, though a was noted first
    keys.forget("a")
    assert keys.oldest_noted_at() is None and not keys.remembers("a", 11.0)
