"""Line-oriented files, read and written through a worker thread.

Every blocking call (open, read, write, close) runs in the event loop's default
executor, so a slow disk never stalls other stages. Reading goes a block at a
time (``readlines(block_bytes)``): each read yields the whole lines in about
that many bytes, which become one chunk (split at ``max_chunk``). Writing joins
what is buffered (up to about ``block_bytes``) into one ``write`` call.

A read or write still in its thread when the stage ends (cancellation,
failure) finishes there; the file is closed after it, never under it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from .._dsl.module import Module
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, fail_future

if TYPE_CHECKING:
    from .._dsl.sink import Sink
    from .._dsl.source import Source
    from .framing import BadRecord, OnBadRecord

PathLike = str | os.PathLike[str]
T = TypeVar("T")
M = TypeVar("M")

#: Bytes per read and, roughly, per write.
BLOCK_BYTES = 64 * 1024


class _Thread:
    """Runs a file's blocking calls one at a time in the executor; closes the file after the last."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: asyncio.Future[Any] | None = None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut = self.loop.run_in_executor(None, fn, *args)
        self.pending = fut
        try:
            return await fut
        finally:
            if fut.done():
                self.pending = None

    def close_after(self, f: IO[Any] | None) -> None:
        if f is None:
            return
        pending = self.pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _fut: _close_quietly(f))
        else:
            _close_quietly(f)


def _close_quietly(f: IO[Any]) -> None:
    try:
        f.close()
    except OSError:
        pass


def _strip_newline(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


class FileLinesSource(Stage):
    inputs = 0
    outputs = 1
    name = "FileSource.lines"
    replayable = True  # re-reads the file on every run

    def __init__(self, path: PathLike, encoding: str, block_bytes: int) -> None:
        self.path = os.fspath(path)
        self.encoding = encoding
        self.block_bytes = block_bytes

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _FileLinesLogic(self, ctx), None

    def __repr__(self) -> str:
        return f"FileSource.lines({self.path!r})"


class _FileLinesLogic(AsyncLogic):
    def __init__(self, stage: FileLinesSource, ctx: RunContext) -> None:
        self.stage = stage
        self.max_chunk = ctx.max_chunk
        self.thread = _Thread(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        st = self.stage
        f: IO[str] | None = None
        line_no = 0
        try:
            f = await self.thread.call(_open_text, st.path, "r", st.encoding)
            while True:
                try:
                    lines = await self.thread.call(f.readlines, st.block_bytes)
                except UnicodeDecodeError as error:
                    error.add_note(f"reading {st.path} after line {line_no} ({st.encoding})")
                    raise
                if not lines:
                    return
                line_no += len(lines)
                chunk = [_strip_newline(x) for x in lines]
                for k in range(0, len(chunk), self.max_chunk):
                    await out.put(chunk[k : k + self.max_chunk])
        finally:
            self.thread.close_after(f)


def _open_text(path: str, mode: str, encoding: str) -> IO[str]:
    return open(path, mode, encoding=encoding, newline=None if "r" in mode else "")


class FileLinesSink(Stage):
    inputs = 1
    outputs = 0
    name = "FileSink.lines"

    def __init__(self, path: PathLike, encoding: str, append: bool, block_bytes: int) -> None:
        self.path = os.fspath(path)
        self.encoding = encoding
        self.append = append
        self.block_bytes = block_bytes

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[int]]:
        fut = ctx.new_future()
        return _FileLinesSinkLogic(self, ctx, fut), fut

    def __repr__(self) -> str:
        return f"FileSink.lines({self.path!r})"


class _FileLinesSinkLogic(AsyncLogic):
    def __init__(self, stage: FileLinesSink, ctx: RunContext, fut: asyncio.Future[int]) -> None:
        self.stage = stage
        self.fut = fut
        self.thread = _Thread(ctx.loop)
        self.written = 0

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        st = self.stage
        f: IO[str] | None = None
        try:
            f = await self.thread.call(_open_text, st.path, "a" if st.append else "w", st.encoding)
            while True:
                item: Any = await inlet.get()
                ended: Any = None
                parts: list[str] = []
                size = 0
                while True:
                    if type(item) is list:
                        text = self._text(item)
                        parts.append(text)
                        size += len(text)
                        self.written += len(item)
                    elif item is END or isinstance(item, Failure):
                        ended = item
                        break
                    if size >= st.block_bytes:
                        break
                    item = inlet.get_nowait()
                    if item is None:
                        break
                if parts:
                    await self.thread.call(f.write, "".join(parts))
                if ended is END:
                    await self.thread.call(f.flush)
                    if not self.fut.done():
                        self.fut.set_result(self.written)
                    return
                if isinstance(ended, Failure):
                    await self.thread.call(f.flush)
                    self.on_failure(ended.error)
                    return
        finally:
            self.thread.close_after(f)

    def _text(self, chunk: list[Any]) -> str:
        try:
            return "\n".join(chunk) + "\n"
        except TypeError:
            for i, x in enumerate(chunk):
                if not isinstance(x, str):
                    raise TypeError(
                        f"{self.stage_name} ({self.stage.path}): line {self.written + i + 1} is "
                        f"{type(x).__name__} {x!r}, expected str"
                    ) from None
            raise

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)


class FileSource:
    """Sources reading files through a worker thread."""

    @staticmethod
    def lines(path: PathLike, *, encoding: str = "utf-8", block_bytes: int = BLOCK_BYTES) -> Source[str, None]:
        """Emit the lines of the text file at ``path``, without their line endings.

        Emits when a block (about ``block_bytes``) has been read, its whole lines
        as one chunk; backpressures by not reading the next block; completes at
        the end of the file; fails with the OS error (naming the path) or, for
        undecodable text, a ``UnicodeDecodeError`` noting the path and line. The
        file is opened when the stream starts and closed when it ends.

        >>> n = await FileSource.lines("access.log").filter(lambda l: " 500 " in l).run_with(Sink.fold(0, lambda n, _: n + 1))
        """
        from .._dsl.source import Source

        if block_bytes < 1:
            raise ValueError(f"block_bytes must be positive, got {block_bytes}")
        return Source(Module.of(FileLinesSource(path, encoding, block_bytes)))

    @overload
    @staticmethod
    def json_lines(
        path: PathLike, type: type[T], *, on_error: Literal["fail", "skip"] = ..., encoding: str = ...
    ) -> Source[T, None]: ...

    @overload
    @staticmethod
    def json_lines(
        path: PathLike, type: type[T], *, on_error: Sink[BadRecord, M], encoding: str = ...
    ) -> Source[T, M]: ...

    @overload
    @staticmethod
    def json_lines(
        path: PathLike, type: Any = ..., *, on_error: Literal["fail", "skip"] = ..., encoding: str = ...
    ) -> Source[Any, None]: ...

    @overload
    @staticmethod
    def json_lines(path: PathLike, type: Any = ..., *, on_error: Sink[BadRecord, M], encoding: str = ...) -> Source[Any, M]: ...

    @staticmethod
    def json_lines(
        path: PathLike, type: Any = None, *, on_error: OnBadRecord = "fail", encoding: str = "utf-8"
    ) -> Source[Any, Any]:
        """Emit the records of a JSON-lines file, decoded (and validated) as ``type`` with msgspec.

        A line that does not decode is handled by ``on_error`` (see
        ``Framing.json_lines``); errors name the file and line number. Given a
        class, the Source is typed ``Source[type, None]`` (``Source[type, M]``
        with a dead-letter ``Sink[BadRecord, M]``).

        >>> users = FileSource.json_lines("users.jsonl", User, on_error="skip")
        """
        from .framing import Framing

        return FileSource.lines(path, encoding=encoding).via_mat(
            Framing.json_lines(type, on_error=on_error, origin=os.fspath(path)), _right
        )

    @overload
    @staticmethod
    def csv(
        path: PathLike,
        type: type[T],
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Literal["fail", "skip"] = ...,
        encoding: str = ...,
    ) -> Source[T, None]: ...

    @overload
    @staticmethod
    def csv(
        path: PathLike,
        type: type[T],
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Sink[BadRecord, M],
        encoding: str = ...,
    ) -> Source[T, M]: ...

    @overload
    @staticmethod
    def csv(
        path: PathLike,
        type: Any = ...,
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Literal["fail", "skip"] = ...,
        encoding: str = ...,
    ) -> Source[Any, None]: ...

    @overload
    @staticmethod
    def csv(
        path: PathLike,
        type: Any = ...,
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Sink[BadRecord, M],
        encoding: str = ...,
    ) -> Source[Any, M]: ...

    @staticmethod
    def csv(
        path: PathLike,
        type: Any = None,
        *,
        header: bool | Sequence[str] = True,
        delimiter: str = ",",
        on_error: OnBadRecord = "fail",
        encoding: str = "utf-8",
    ) -> Source[Any, Any]:
        """Emit the rows of a CSV file, converted to ``type`` with msgspec (see ``Framing.csv``).

        >>> orders = FileSource.csv("orders.csv", Order, on_error=Sink.foreach(log_bad))
        """
        from .framing import Framing

        flow = Framing.csv(type, header=header, delimiter=delimiter, on_error=on_error, origin=os.fspath(path))
        return FileSource.lines(path, encoding=encoding).via_mat(flow, _right)


def _right(a: Any, b: Any) -> Any:
    return b


class FileSink:
    """Sinks writing files through a worker thread."""

    @staticmethod
    def lines(
        path: PathLike, *, append: bool = False, encoding: str = "utf-8", block_bytes: int = BLOCK_BYTES
    ) -> Sink[str, asyncio.Future[int]]:
        """Write each element (a str) as one line of the file at ``path``; materializes the line count.

        Backpressures while a write is in its thread; completes (the future
        gets the number of lines written) when upstream completes and the file
        is flushed; an element that is not a str fails the stream naming its line
        number. ``append=False`` truncates the file when the stream starts.

        >>> count = await Source.from_iterable(rows).map(format_row).run_with(FileSink.lines("out.txt"))
        """
        from .._dsl.sink import Sink

        return Sink(Module.of(FileLinesSink(path, encoding, append, block_bytes)))
