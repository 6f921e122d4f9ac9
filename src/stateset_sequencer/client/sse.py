"""An incremental Server-Sent Events parser, as the HTML standard's "event stream
interpretation" reads one (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Bytes go in as they arrive, in chunks of any size; whole messages come out. A chunk may
end anywhere: inside a UTF-8 sequence, inside a line, or between the CR and the LF of a
CRLF. Lines end with CRLF, LF or CR; ``:`` starts a comment; ``data`` lines accumulate,
joined by LF; ``id`` sets the last event id, which outlives the message (and a message
without data dispatches nothing but still moves it); ``retry`` takes digits only. What
the end of the stream cuts short (a line, a message) is dropped, as a browser drops it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# A hostile or broken server must not grow the buffer without end: the sequencer's largest
# event is a few MiB of JSON (MAX_PAGE_BYTES), far below this.
DEFAULT_MAX_MESSAGE_CHARS = 64 * 1024 * 1024

_LINE_END = re.compile(r"\r\n|\r|\n")


class SseTooLarge(ValueError):
    """A line or a message longer than the parser was told to hold."""


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One dispatched message: its type (``message`` when unnamed), its data (the data
    lines joined by LF), and the last event id as it stood when it was dispatched."""

    event: str
    data: str
    last_event_id: str


class SseParser:
    def __init__(self, *, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_message_chars
        self._started = False  # the BOM is stripped once, at the very start
        self._pending_cr = False  # the last chunk ended with CR: a leading LF is its pair
        self._partial: list[str] = []
        self._partial_size = 0
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SseMessage]:
        """The messages completed by ``chunk``."""
        return self._text(self._decoder.decode(chunk))

    def close(self) -> None:
        """The end of the stream: a line without its end and a message without its
        blank line are dropped, never dispatched."""
        self._decoder.reset()
        self._partial.clear()
        self._partial_size = 0
        self._pending_cr = False
        self._event, self._data, self._data_size = "", [], 0

    def _text(self, text: str) -> list[SseMessage]:
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr:
            self._pending_cr = False
            text = text.removeprefix("\n")
        out: list[SseMessage] = []
        start = 0
        for end in _LINE_END.finditer(text):
            piece = text[start : end.start()]
            if self._partial:
                self._partial.append(piece)
                line = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            else:
                line = piece
            start = end.end()
            message = self._line(line)
            if message is not None:
                out.append(message)
        rest = text[start:]
        if rest:
            self._partial.append(rest)
            self._partial_size += len(rest)
            if self._partial_size > self._max:
                raise SseTooLarge(f"an SSE line longer than {self._max} characters")
        # A CR that ends the text may be the first half of a CRLF split across chunks.
        if text.endswith("\r"):
            self._pending_cr = True
        return out

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise SseTooLarge(f"an SSE message longer than {self._max} characters")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        event, data = self._event, self._data
        self._event, self._data, self._data_size = "", [], 0
        if not data:
            return None
        return SseMessage(event or "message", "\n".join(data), self.last_event_id)
