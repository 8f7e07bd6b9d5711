"""The JSON depth check: exact on valid JSON, never laxer than the parser, linear on the worst bodies."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from core.jsonbody import _nests_deeper

MAX_BODY = 256 * 1024  # MAX_REQUEST_BYTES' default


def reference_nests_deeper(raw: bytes, limit: int) -> bool:
    """Byte by byte, as a JSON parser meets the brackets; it stops where the parser would."""
    depth, i, in_string = 0, 0, False
    while i < len(raw):
        char = raw[i : i + 1]
        if in_string:
            if char == b"\\":
                i += 2
                continue
            in_string = char != b'"'
        elif char == b"\\":
            return False  # not JSON: the parser stops here
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return False


@pytest.mark.parametrize(
    ("body", "deeper"),
    [
        (b'{"a": [[[1]]]}', True),
        (b'{"a": [[1], [2], {"b": 3}]}', False),
        (b'{"a": "[[[[[[[[", "b": "{{{{{{{{"}', False),  # brackets in strings are text
        (b'{"a": "\\"[[[[[[[[", "b": 1}', False),  # an escaped quote does not end the string
        (b'{"a": "\\\\", "b": [[[1]]]}', True),  # an escaped backslash does not escape the quote
        (b'{"a": "\\\\\\"[[[[[[", "b": 1}', False),  # three backslashes: one escaped, then an escaped quote
        (b'{"a": [[[', True),  # a truncated body nests as deep as it got
        (b'{"a": "[[[[[[[', False),  # ... but not inside an open string
        (b"]]]][[[[", False),  # the parser stops at the first ]
        (b"[[[]]]", False),
        (b"[[[[]]]]", True),
    ],
)
def test_depth_beyond_the_limit_is_found_brackets_in_strings_aside(body: bytes, deeper: bool) -> None:
    assert _nests_deeper(body, 3) is deeper
    assert reference_nests_deeper(body, 3) is deeper


def test_exact_on_valid_json_and_never_laxer_on_any_bytes() -> None:
    rng = random.Random(11)  # noqa: S311 - a repeatable fuzz, not a secret

    def value(depth: int) -> Any:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice([1, None, 'a["\\{', "]]\\", "\\\\[", ""])
        if rng.random() < 0.5:
            return [value(depth - 1) for _ in range(rng.randint(0, 3))]
        return {f"k{i}[": value(depth - 1) for i in range(rng.randint(0, 3))}

    for _ in range(3_000):
        body = json.dumps(value(7)).encode()
        for limit in range(6):
            assert _nests_deeper(body, limit) == reference_nests_deeper(body, limit), (body, limit)
    for _ in range(30_000):
        junk = bytes(rng.choice(b'[]{}"\\a,') for _ in range(rng.randint(0, 24)))
        for limit in range(4):
            if reference_nests_deeper(junk, limit):
                assert _nests_deeper(junk, limit), (junk, limit)


@pytest.mark.parametrize(
    "body",
    [
        # What made the old string-stripping regex quadratic: many brackets, then escaped quotes
        # in a string that never ends.
        b'{"content": "' + b"[" * 33 + b'\\"' * (MAX_BODY // 2 - 40),
        b"[" * 33 + b'"\\' * (MAX_BODY // 2 - 20),
        # What costs this check most: many brackets, many strings, deep pairs.
        b'["[",' * (MAX_BODY // 5),
        b"[" * 40 + b'"' * (MAX_BODY - 40),
        b"[]" * (MAX_BODY // 2),
        (b"[" * 32 + b"]" * 32) * (MAX_BODY // 64),
        b"[" * MAX_BODY,
    ],
    ids=["escaped-quotes", "open-string", "strings", "quotes", "pairs", "deep-pairs", "opens"],
)
def test_the_worst_bodies_of_the_largest_size_take_linear_time(body: bytes) -> None:
    started = time.perf_counter()
    _nests_deeper(body, 32)
    # Milliseconds here; the quadratic check took minutes on the first two.
    assert time.perf_counter() - started < 5
