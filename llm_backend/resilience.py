"""Circuit breakers and failover across model-server targets.

A sick target costs fast errors, not pile-ups: after a run of failures its
breaker opens and calls to it fail at once (503 with Retry-After) until a
cool-down has passed; then one probe call may go through (half-open), and its
success closes the breaker again. Each model has an ordered list of targets:
when the first is down (breaker open, or the call failed before any answer
came back) the next one serves the turn. Nothing is retried or redirected once
the first delta of a stream has reached the gateway.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from enum import IntEnum
from typing import Any

from llm_backend import metrics
from llm_backend.errors import BackendError, BackendRejected, BackendUnavailable
from llm_backend.ports import ChatBackend, ChatRequest, Completion, StreamEvent


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures_to_open: int = 5,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._failures_to_open = failures_to_open
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._probing = False
        self._publish()

    @property
    def state(self) -> BreakerState:
        if self._state == BreakerState.OPEN and self._clock() - self._opened_at >= self._open_seconds:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        return max(0.0, self._opened_at + self._open_seconds - self._clock())

    def admit(self) -> None:
        """Raise `BackendUnavailable` if calls must not go to this target now."""
        state = self.state
        if state == BreakerState.OPEN:
            raise BackendUnavailable(
                "The model server is failing; retry later.", retry_after=_seconds(self.retry_after())
            )
        if state == BreakerState.HALF_OPEN:
            if self._probing:  # one probe at a time
                raise BackendUnavailable("The model server is being probed; retry shortly.", retry_after=1)
            self._probing = True
            self._state = BreakerState.HALF_OPEN
            self._publish()

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        if self._state != BreakerState.CLOSED:  # on every call: the gauge moves only when it changes
            self._state = BreakerState.CLOSED
            self._publish()

    def abandoned(self) -> None:
        """The call ended without a verdict (it was cancelled): free the probe, if it was one."""
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        was_probe, self._probing = self._probing, False
        if was_probe or self._failures >= self._failures_to_open:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
        self._publish()

    def _publish(self) -> None:
        metrics.CIRCUIT_BREAKER.labels(target=self.name).set(int(self._state))


def _seconds(value: float) -> int:
    return max(1, round(value + 0.499))


def counts_against(error: BaseException) -> bool:
    """Failures of the target, not of the request: a rejected request says nothing about health."""
    return isinstance(error, BackendError) and not isinstance(error, BackendRejected)


def _judge(breaker: CircuitBreaker, exc: BaseException) -> None:
    """A failure of the target counts against it; a refused request shows it answering;
    a cancellation says nothing either way."""
    if counts_against(exc):
        breaker.failed()
    elif isinstance(exc, BackendError):
        breaker.succeeded()
    else:
        breaker.abandoned()


class FailoverChatBackend:
    """`ChatBackend` over an ordered list of targets, each behind its own breaker."""

    def __init__(self, targets: Sequence[tuple[ChatBackend, CircuitBreaker]]) -> None:
        if not targets:
            raise ValueError("FailoverChatBackend needs at least one target")
        self.targets = list(targets)

    def _unavailable(self) -> BackendUnavailable:
        waits = [breaker.retry_after() for _, breaker in self.targets]
        return BackendUnavailable(retry_after=_seconds(min(waits)) if waits else 1)

    def _admitted(self, failures: list[BaseException]) -> Iterator[tuple[ChatBackend, CircuitBreaker]]:
        """The targets whose breaker lets a call through, in order; the refusals go to `failures`."""
        for backend, breaker in self.targets:
            try:
                breaker.admit()
            except BackendUnavailable as refused:
                failures.append(refused)
                continue
            yield backend, breaker

    async def complete(self, request: ChatRequest) -> Completion:
        failures: list[BaseException] = []
        for backend, breaker in self._admitted(failures):
            try:
                completion = await backend.complete(request)
            except BackendUnavailable as exc:  # down before answering: the next target may serve
                breaker.failed()
                failures.append(exc)
                continue
            except BaseException as exc:
                _judge(breaker, exc)
                raise
            breaker.succeeded()
            return completion
        raise self._unavailable() from (failures[-1] if failures else None)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        failures: list[BaseException] = []
        for backend, breaker in self._admitted(failures):
            events = backend.stream(request)
            try:
                first = await anext(events)
            except BackendUnavailable as exc:
                breaker.failed()
                failures.append(exc)
                await events.aclose()
                continue
            except BaseException as exc:
                _judge(breaker, exc)
                await events.aclose()
                raise
            # Committed to this target: from the first delta on, no failover and no retry (nor
            # the request, which would keep the context alive as long as the stream is open).
            del request
            try:
                yield first
                async for event in events:
                    yield event
            except BaseException as exc:
                _judge(breaker, exc)
                raise
            else:
                breaker.succeeded()
            finally:
                await events.aclose()
            return
        raise self._unavailable() from (failures[-1] if failures else None)

    async def prepare(self) -> None:
        for backend, _ in self.targets:
            await backend.prepare()

    async def check(self) -> None:
        """Ready when some target is: its breaker is not open and its health service says serving."""
        problems: list[BaseException] = []
        for backend, breaker in self.targets:
            if breaker.state == BreakerState.OPEN:
                problems.append(BackendUnavailable("circuit open"))
                continue
            try:
                await backend.check()
                return
            except BackendError as exc:
                problems.append(exc)
        raise BackendUnavailable(f"no target is serving ({len(problems)} down)")

    def breaker_states(self) -> dict[str, str]:
        return {breaker.name: breaker.state.name.lower() for _, breaker in self.targets}

    def tls_problems(self) -> dict[str, str]:
        """Why TLS to a target last failed (an expired or untrusted certificate), by target."""
        problems = {breaker.name: getattr(backend, "tls_problem", None) for backend, breaker in self.targets}
        return {name: problem for name, problem in problems.items() if problem}

    async def close(self) -> None:
        for backend, _ in self.targets:
            await backend.close()


class RoutingChatBackend:
    """Picks the target list by the request's model; `*` is the default route."""

    def __init__(self, routes: Mapping[str, FailoverChatBackend]) -> None:
        if "*" not in routes:
            raise ValueError("the backend routes need a default ('*')")
        self.routes = dict(routes)

    def _for(self, request: ChatRequest) -> FailoverChatBackend:
        return self.routes.get(request.model) or self.routes["*"]

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._for(request).complete(request)

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        # The route's own stream, handed over as it is: a generator here that only re-yielded
        # would be one more hop for every delta.
        return self._for(request).stream(request)

    async def prepare(self) -> None:
        for route in self.routes.values():
            await route.prepare()

    async def check(self) -> None:
        await self.routes["*"].check()

    def breaker_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for route in self.routes.values():
            states.update(route.breaker_states())
        return states

    def tls_problems(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        for route in self.routes.values():
            problems.update(route.tls_problems())
        return problems

    async def close(self) -> None:
        for route in self.routes.values():
            await route.close()


def grpc_routes(routes: Mapping[str, Sequence[str]], **options: Any) -> RoutingChatBackend:
    """Build the gateway's backend from settings: model -> ordered gRPC targets."""
    from llm_backend.grpc_client import GrpcChatBackend

    breaker_options = {k: options.pop(k) for k in ("failures_to_open", "open_seconds") if k in options}
    # One channel and one breaker per target, shared by every route that names it.
    targets: dict[str, tuple[ChatBackend, CircuitBreaker]] = {}
    for name in {t for route in routes.values() for t in route}:
        targets[name] = (GrpcChatBackend(target=name, **options), CircuitBreaker(name, **breaker_options))
    return RoutingChatBackend(
        {model: FailoverChatBackend([targets[t] for t in route]) for model, route in routes.items()}
    )
