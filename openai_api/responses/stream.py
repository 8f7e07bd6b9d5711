"""A streamed response as OpenAI's event sequence, each event with its type and a rising number.

`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, then one `response.output_text.delta` per model delta as it
arrives, then `response.output_text.done`, `response.content_part.done`,
`response.output_item.done` and `response.completed` (or `response.incomplete`); a failure
after the stream began is an `error` event and `response.failed`.

Fewer writes, the same events: the opening four go out with the first delta (or whatever comes
first), in one write, and the closing four in one. The opening waits for nothing by that: the
stream's head is sent only once the model's first delta is in (as the native stream's is), and
that delta is rendered at once after. Each write is a chunk through the server, about 15 us of
CPU.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from openai_api.ids import item_id
from openai_api.responses import present
from openai_api.responses.records import ResponseRecord

Write = Callable[[bytes], Awaitable[None]]
TERMINAL = {"completed": b"response.completed", "incomplete": b"response.incomplete"}
# An event's bytes around its type, its sequence number and the rest of its members: what
# `orjson.dumps({"type": ..., "sequence_number": ..., **rest})` makes of it, the rest (and the
# objects in it, whose text is serialised once for all the events that carry it) put together
# as bytes. The opening and closing four events, and each delta, cost no dict (a delta 4 -> 1 us).
_EVENT = b'event: %b\ndata: {"type":"%b","sequence_number":%d%b}\n\n'
_DELTA = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d%b,"delta":%b,"logprobs":[]}\n\n'  # noqa: E501
_EMPTY_PART = orjson.dumps(present.output_text(""))


class EventWriter:
    """Numbers and writes the events of one streamed response."""

    def __init__(self, write: Write, *, stored: bool) -> None:
        self._write = write
        self._stored = stored
        self._sequence = 0
        self._pieces: list[str] = []
        self._pending: list[bytes] = []  # events numbered, not written yet
        self._item_id = b'""'  # the output item's id, as JSON (`begin`'s)
        self._part = b""  # the members naming the output text: item, output and content index

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def _event(self, type_: bytes, rest: bytes) -> None:
        """Number an event and hold it for the next write: `rest` is its members after `type` and
        `sequence_number`, each after a comma."""
        self._pending.append(_EVENT % (type_, type_, self._sequence, rest))
        self._sequence += 1

    async def _flush(self) -> None:
        """Write the events numbered so far, in one write."""
        pending, self._pending = self._pending, []
        await self._write(b"".join(pending))

    def begin(self, record: ResponseRecord) -> None:
        """Everything before the first delta, for a response whose record says `in_progress`:
        written with the next event."""
        started = b',"response":' + orjson.dumps(present.response(record, stored=self._stored, output=None))
        self._item_id = orjson.dumps(item_id(record.output_message_id))
        self._part = b',"item_id":' + self._item_id + b',"output_index":0,"content_index":0'
        self._event(b"response.created", started)
        self._event(b"response.in_progress", started)
        self._event(b"response.output_item.added", b',"output_index":0,"item":' + self._item(b"in_progress", b""))
        self._event(b"response.content_part.added", self._part + b',"part":' + _EMPTY_PART)

    def delta(self, content: str) -> bytes:
        """A delta event's bytes, after `begin`: for the caller to write (the opening events with the
        first), so a delta costs no coroutine of the writer's own."""
        self._pieces.append(content)
        event = _DELTA % (self._sequence, self._part, orjson.dumps(content))
        self._sequence += 1
        if not self._pending:
            return event
        self._pending.append(event)  # the opening, with the first delta
        pending, self._pending = self._pending, []
        return b"".join(pending)

    async def end(self, record: ResponseRecord, *, completed_at: float) -> None:
        """The text's, the part's and the item's ends, then the response's, as `record` says it ended."""
        text = orjson.dumps(self.text)
        part = b'{"type":"output_text","text":' + text + b',"annotations":[],"logprobs":[]}'
        item = self._item(present.item_status(record.status).encode(), part)
        final = present.response(record, stored=self._stored, output=None, completed_at=completed_at)
        final["output"] = [orjson.Fragment(item)]
        self._event(b"response.output_text.done", self._part + b',"text":' + text + b',"logprobs":[]')
        self._event(b"response.content_part.done", self._part + b',"part":' + part)
        self._event(b"response.output_item.done", b',"output_index":0,"item":' + item)
        self._event(TERMINAL.get(record.status, b"response.failed"), b',"response":' + orjson.dumps(final))
        await self._flush()

    async def error(self, code: str, message: str) -> None:
        fields = orjson.dumps({"code": code, "message": message, "param": None})
        self._event(b"error", b"," + fields[1:-1])
        await self._flush()

    def _item(self, status: bytes, part: bytes) -> bytes:
        """The output message item (`present.output_message`) holding `part` (none: b"")."""
        return (
            b'{"id":' + self._item_id + b',"type":"message","role":"assistant","status":"' + status
            + b'","content":[' + part + b"]}"
        )  # fmt: skip
