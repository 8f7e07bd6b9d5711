"""`Result` values for application calls whose failure is expected, not exceptional."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeAlias, TypeVar

from core.errors import GatewayError

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Err(Generic[E]):
    error: E


Result: TypeAlias = Ok[T] | Err[E]


def unwrap(result: Result[T, E]) -> T:
    """The value of `Ok`, or raise the error of `Err` (for edges that map errors centrally)."""
    if isinstance(result, Ok):
        return result.value
    raise result.error


def returns_result(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[Result[T, GatewayError]]]:
    """Turn an application method's expected failures (`GatewayError`) into `Err` values.

    Inside, the method may raise domain errors where that reads best; callers
    always get a `Result`. Anything else (a bug) still raises.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result[T, GatewayError]:
        try:
            return Ok(await method(*args, **kwargs))
        except GatewayError as error:
            return Err(error)

    return wrapper
