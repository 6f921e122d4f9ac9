"""The SSE parser against the HTML standard's reading of an event stream, and the property
a network parser lives by: however the bytes are cut into chunks, the messages are the
same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.client.sse import SseMessage, SseParser, SseTooLarge


def parse(*chunks: bytes) -> list[SseMessage]:
    parser = SseParser()
    out: list[SseMessage] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    parser.close()
    return out


def test_the_sequencers_messages() -> None:
    stream = (
        b"retry: 2000\n\n"
        b'id: 7\nevent: event\ndata: {"envelope":{"sequence_number":7}}\n\n'
        b'id: 9\nevent: heartbeat\ndata: {"position":9}\n\n'
        b'event: error\ndata: {"code":"subscriber_too_slow"}\n\n'
    )
    assert parse(stream) == [
        SseMessage("event", '{"envelope":{"sequence_number":7}}', "7"),
        SseMessage("heartbeat", '{"position":9}', "9"),
        # The id outlives its message: an error without one still carries the last.
        SseMessage("error", '{"code":"subscriber_too_slow"}', "9"),
    ]


def test_retry_takes_digits_only() -> None:
    parser = SseParser()
    parser.feed(b"retry: 2000\n\nretry: 3s\n\n")
    assert parser.retry_ms == 2000


def test_data_lines_join_comments_vanish_and_every_line_end_counts() -> None:
    stream = b": hello\r\ndata: one\r\ndata:two\rdata\n:comment\ndata:  three\n\r\n"
    assert parse(stream) == [SseMessage("message", "one\ntwo\n\n three", "")]


def test_a_message_without_data_dispatches_nothing_but_moves_the_id() -> None:
    assert parse(b"id: 4\nevent: heartbeat\n\ndata: x\n\n") == [SseMessage("message", "x", "4")]


def test_an_empty_id_resets_and_one_with_nul_is_ignored() -> None:
    messages = parse(b"id: 3\ndata: a\n\nid\ndata: b\n\nid: 5\x006\ndata: c\n\n")
    assert [m.last_event_id for m in messages] == ["3", "", ""]


def test_a_leading_bom_is_dropped_once_and_unknown_fields_ignored() -> None:
    stream = "\ufeffdata: a\n\nfoo: bar\ndata: \ufeffb\n\n".encode()
    assert [m.data for m in parse(stream)] == ["a", "\ufeffb"]


def test_what_the_end_cuts_short_is_dropped() -> None:
    assert parse(b"data: whole\n\ndata: half\n") == [SseMessage("message", "whole", "")]
    assert parse(b"data: whole\n\ndata: no line end") == [SseMessage("message", "whole", "")]


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    assert parse(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [
        SseMessage("message", "a", ""),
        SseMessage("message", "b", ""),
    ]


def test_invalid_utf8_is_replaced_and_a_split_sequence_is_whole() -> None:
    snowman = "☃".encode()
    assert parse(b"data: " + snowman[:1], snowman[1:] + b"\xff\n\n") == [
        SseMessage("message", "☃\ufffd", "")
    ]


def test_a_line_longer_than_allowed_is_refused() -> None:
    parser = SseParser(max_message_chars=100)
    for _ in range(6):
        parser.feed(b"data: " + b"x" * 10)  # 96 characters of one line so far
    with pytest.raises(SseTooLarge):
        parser.feed(b"x" * 10)
    parser = SseParser(max_message_chars=100)
    with pytest.raises(SseTooLarge):
        parser.feed(b"data: x\n" * 60)


# --- any stream, cut anywhere -----------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=12,
)
_END = st.sampled_from(["\n", "\r", "\r\n"])
_LINE = st.one_of(
    st.tuples(st.sampled_from(["data", "event", "id", "retry", ":", "other"]), _TEXT),
    st.just(("", "")),  # a blank line: a dispatch
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_LINE, _END), max_size=30))
    text = ""
    for (name, value), end in lines:
        if name == ":":
            text += ":" + value
        elif name:
            text += name + draw(st.sampled_from([":", ": "])) + value
        text += end
    return text.encode()


@given(streams(), st.data())
def test_any_split_of_the_bytes_parses_the_same(stream: bytes, data: st.DataObject) -> None:
    whole = parse(stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=len(stream) + 1)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert parse(*chunks) == whole
    assert parse(*(stream[i : i + 1] for i in range(len(stream)))) == whole


@given(
    st.lists(
        st.tuples(
            st.lists(_TEXT, min_size=1, max_size=4),
            st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            st.from_regex(r"[0-9]{1,6}", fullmatch=True),
        ),
        max_size=8,
    ),
    st.sampled_from(["\n", "\r", "\r\n"]),
)
def test_written_messages_read_back(messages: list[tuple[list[str], str, str]], end: str) -> None:
    text = "".join(
        f"id: {ident}{end}event: {kind}{end}"
        + "".join(f"data: {line}{end}" for line in lines)
        + f": a comment{end}{end}"
        for lines, kind, ident in messages
    )
    assert parse(text.encode()) == [
        SseMessage(kind, "\n".join(lines), ident) for lines, kind, ident in messages
    ]
