"""The archived form of a session: what one holds comes back as it was, and an archive written before
message seqs existed still reads (each message's position taken as its seq)."""

from __future__ import annotations

import dataclasses

import orjson

from archive import codec
from sessions_app.domain import SessionStatus, Transcript
from tests.factories import make_session, make_turn


def test_seqs_with_gaps_and_the_next_seq_round_trip() -> None:
    question, answer = make_turn(0)
    transcript = Transcript(
        make_session(message_count=2, next_seq=9),
        (dataclasses.replace(question, seq=3), dataclasses.replace(answer, seq=7)),
    )

    back = codec.decode(codec.encode(transcript), status=SessionStatus.ACTIVE)

    assert back == transcript
    assert [m.seq for m in back.messages] == [3, 7] and back.session.next_seq == 9


def test_an_archive_written_before_seqs_reads_with_positions_as_seqs() -> None:
    session = make_session(message_count=4)
    turns = [*make_turn(0), *make_turn(1)]
    old = orjson.loads(codec.encode(Transcript(session, tuple(turns))))
    del old["session"]["next_seq"]
    assert all(len(m) == 4 for m in old["messages"])  # no seq stored: the old form

    back = codec.decode(orjson.dumps(old), status=SessionStatus.ACTIVE)

    assert [m.id for m in back.messages] == [m.id for m in turns]
    assert [m.seq for m in back.messages] == [0, 1, 2, 3] and back.session.next_seq == 4
