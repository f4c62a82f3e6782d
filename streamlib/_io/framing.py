"""Framing: lines of text to typed records (JSON lines, CSV) and back, with msgspec.

Decoding is one fused stage that counts lines (from 1, blank lines included)
so every bad line is reported with where it came from (``origin``, usually the
file name) and its line number. What happens to a bad line is the user's choice,
never silence:

* ``"fail"`` (default): the stream fails with :class:`BadRecordError`;
* ``"skip"``: the line is dropped and logged (logger ``streamlib.io``) with its
  origin, number and reason;
* a Sink: a :class:`BadRecord` goes to that dead-letter sink (through a
  ``Partition``; the decoding Flow then materializes the sink's value).

Blank lines carry no record and are passed over. In CSV, an empty field takes
the Struct field's default when it has one; records spanning lines (quoted
newlines) are not supported and report an unterminated quote.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, cast, overload

import msgspec

from .._dsl.keep import Keep
from .._dsl.module import Module
from .._runtime.context import RunContext
from ..stage import Stage, StageLogic

if TYPE_CHECKING:
    from .._dsl.flow import Flow
    from .._dsl.sink import Sink

log = logging.getLogger("streamlib.io")

OnBadRecord = Union[Literal["fail", "skip"], "Sink[BadRecord, Any]"]
T = TypeVar("T")
M = TypeVar("M")


class BadRecord(msgspec.Struct, frozen=True):
    """A line that could not be decoded: where it was, what it held, and why it failed."""

    origin: str
    line_number: int
    line: str
    error: str


class BadRecordError(ValueError):
    """A line could not be decoded into a record (``on_error="fail"``)."""

    def __init__(self, record: BadRecord) -> None:
        super().__init__(f"{record.origin} line {record.line_number}: {record.error}: {record.line[:200]!r}")
        self.record = record


class _Bad:
    """A bad line on its way to the dead-letter sink."""

    __slots__ = ("record",)

    def __init__(self, record: BadRecord) -> None:
        self.record = record


def _is_bad(x: Any) -> bool:
    return type(x) is _Bad


def _unwrap(x: _Bad) -> BadRecord:
    return x.record


# -- the decoding stage ---------------------------------------------------------------


class _Decode(Stage):
    """Lines to records with ``parser(line)``; counts lines for error reports."""

    def __init__(self, name: str, make_parser: Callable[[], Callable[[str], Any]], origin: str, mode: str) -> None:
        self.name = name
        self.make_parser = make_parser
        self.origin = origin
        self.mode = mode  # "fail", "skip" or "divert"

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return _DecodeLogic(self.make_parser(), self.origin, self.mode), None

    def __repr__(self) -> str:
        return f"{self.name}({self.origin})"


class _DecodeLogic(StageLogic):
    def __init__(self, parse: Callable[[str], Any], origin: str, mode: str) -> None:
        self.parse = parse
        self.origin = origin
        self.mode = mode
        self.line_number = 0
        self.partial: list[Any] = []

    def take_partial(self) -> list[Any]:
        partial, self.partial = self.partial, []
        return partial

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        parse = self.parse
        out: list[Any] = []
        n = self.line_number
        for line in chunk:
            n += 1
            try:
                if not line or line.isspace():
                    continue
                record = parse(line)
            except (msgspec.DecodeError, msgspec.ValidationError, csv.Error, _FieldCountError) as error:
                self.line_number = n
                self._bad(BadRecord(self.origin, n, line, str(error)), out)
                continue
            except (TypeError, AttributeError) as error:
                if isinstance(line, (str, bytes)):
                    raise
                self.line_number = n
                self.partial = out
                raise TypeError(f"{self.origin} line {n}: expected a str line, got {type(line).__name__}") from error
            if record is not _HEADER:
                out.append(record)
        self.line_number = n
        return out

    def _bad(self, bad: BadRecord, out: list[Any]) -> None:
        if self.mode == "fail":
            self.partial = out
            raise BadRecordError(bad)
        if self.mode == "skip":
            log.warning("%s line %d skipped: %s: %r", bad.origin, bad.line_number, bad.error, bad.line[:200])
        else:
            out.append(_Bad(bad))


_HEADER: Any = object()


class _FieldCountError(ValueError):
    pass


# -- parsers ------------------------------------------------------------------------------


def _json_parser(type_: Any) -> Callable[[], Callable[[str], Any]]:
    def make() -> Callable[[str], Any]:
        decoder = msgspec.json.Decoder(type_) if type_ is not None else msgspec.json.Decoder()
        return decoder.decode  # type: ignore[no-any-return]

    return make


class _OneLine:
    """An iterator a csv.reader reads one line at a time from (so rows map to line numbers)."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.line
        if line is None:
            raise StopIteration
        self.line = None
        return line


def _csv_parser(type_: Any, header: bool | Sequence[str], delimiter: str) -> Callable[[], Callable[[str], Any]]:
    fields: list[str] | None = None
    defaults: set[str] = set()
    if type_ is not None and isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        infos = msgspec.structs.fields(type_)
        fields = [f.encode_name for f in infos]
        defaults = {
            f.encode_name for f in infos if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
        }

    if header is False and type_ is not None and fields is None:
        raise TypeError("Framing.csv(header=False) needs a Struct type (its fields name the columns) or no type")

    def make() -> Callable[[str], Any]:
        feed = _OneLine()
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        names: list[str] | None = list(header) if not isinstance(header, bool) else (None if header else fields)

        def parse(line: str) -> Any:
            nonlocal names
            feed.line = line
            row = next(reader)
            if names is None:
                if header is True:
                    names = row
                    return _HEADER
                return row  # header=False and no type: rows as lists of str
            if len(row) != len(names):
                raise _FieldCountError(f"expected {len(names)} fields, got {len(row)}")
            record = {k: v for k, v in zip(names, row) if v or k not in defaults}
            if type_ is None:
                return record
            return msgspec.convert(record, type_, strict=False)

        return parse

    return make


def _decode_flow(stage: _Decode, on_error: Any) -> Flow[str, Any, Any]:
    from .._dsl.flow import Flow
    from .._ops.junctions import divert_to

    if isinstance(on_error, str):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail', 'skip' or a Sink, got {on_error!r}")
        stage.mode = on_error
        return Flow(Module.of(stage))
    sink_module = getattr(on_error, "_module", None)
    if not isinstance(sink_module, Module) or sink_module.inlet is None or sink_module.outlet is not None:
        raise TypeError(f"on_error must be 'fail', 'skip' or a Sink, got {on_error!r}")
    stage.mode = "divert"
    dead: Sink[Any, Any] = Flow().map(_unwrap).to_mat(on_error, Keep.right)
    return Flow(Module.of(stage).compose(divert_to(dead._module, _is_bad), Keep.right))


class Framing:
    """Flows between lines of text and typed records (JSON lines, CSV), with msgspec."""

    @overload
    @staticmethod
    def json_lines(
        type: type[T], *, on_error: Literal["fail", "skip"] = ..., origin: str = ...
    ) -> Flow[str, T, None]: ...

    @overload
    @staticmethod
    def json_lines(type: type[T], *, on_error: Sink[BadRecord, M], origin: str = ...) -> Flow[str, T, M]: ...

    @overload
    @staticmethod
    def json_lines(
        type: Any = ..., *, on_error: Literal["fail", "skip"] = ..., origin: str = ...
    ) -> Flow[str, Any, None]: ...

    @overload
    @staticmethod
    def json_lines(type: Any = ..., *, on_error: Sink[BadRecord, M], origin: str = ...) -> Flow[str, Any, M]: ...

    @staticmethod
    def json_lines(type: Any = None, *, on_error: OnBadRecord = "fail", origin: str = "<stream>") -> Flow[str, Any, Any]:
        """Decode each line as one JSON value, validated as ``type`` (a msgspec Struct, dict, ...).

        Emits one record per non-blank line; a line that does not decode or
        validate goes to ``on_error``: ``"fail"`` (``BadRecordError`` naming
        ``origin`` and the line number), ``"skip"`` (logged) or a dead-letter
        Sink of :class:`BadRecord` (the Flow then materializes that sink's
        value). Fused: one pass over each chunk. Given a class, the Flow is
        typed ``Flow[str, type, None]`` (``Flow[str, type, M]`` with a
        dead-letter ``Sink[BadRecord, M]``).

        >>> users = lines.via(Framing.json_lines(User, on_error=Sink.foreach(print), origin="users.jsonl"))
        """
        return _decode_flow(_Decode("json_lines", _json_parser(type), origin, "fail"), on_error)

    @overload
    @staticmethod
    def csv(
        type: type[T],
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Literal["fail", "skip"] = ...,
        origin: str = ...,
    ) -> Flow[str, T, None]: ...

    @overload
    @staticmethod
    def csv(
        type: type[T],
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Sink[BadRecord, M],
        origin: str = ...,
    ) -> Flow[str, T, M]: ...

    @overload
    @staticmethod
    def csv(
        type: Any = ...,
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Literal["fail", "skip"] = ...,
        origin: str = ...,
    ) -> Flow[str, Any, None]: ...

    @overload
    @staticmethod
    def csv(
        type: Any = ...,
        *,
        header: bool | Sequence[str] = ...,
        delimiter: str = ...,
        on_error: Sink[BadRecord, M],
        origin: str = ...,
    ) -> Flow[str, Any, M]: ...

    @staticmethod
    def csv(
        type: Any = None,
        *,
        header: bool | Sequence[str] = True,
        delimiter: str = ",",
        on_error: OnBadRecord = "fail",
        origin: str = "<stream>",
    ) -> Flow[str, Any, Any]:
        """Parse each line as a CSV row and convert it to ``type`` (str fields coerced, e.g. "3" to 3).

        ``header=True``: the first line names the columns; a list: these names,
        no header line; ``False``: the Struct's fields in order (without
        ``type``, rows come as lists of str). Without ``type`` rows are dicts.
        Bad rows (wrong field count, failed conversion, broken quoting) go to
        ``on_error`` as in ``json_lines``.

        >>> orders = lines.via(Framing.csv(Order, origin="orders.csv"))
        """
        return _decode_flow(_Decode("csv", _csv_parser(type, header, delimiter), origin, "fail"), on_error)

    @staticmethod
    def to_json_lines() -> Flow[Any, str, None]:
        """Encode each element (Struct, dict, list, ...) as one line of JSON (msgspec).

        >>> await FileSource.json_lines("in.jsonl", User).via(Framing.to_json_lines()).run_with(FileSink.lines("out.jsonl"))
        """
        from .._dsl.flow import Flow

        encoder = msgspec.json.Encoder()

        def encode(x: Any) -> str:
            return encoder.encode(x).decode()

        return Flow().map(encode)

    @staticmethod
    def to_csv(columns: Sequence[str] | Any, *, header: bool = True, delimiter: str = ",") -> Flow[Any, str, None]:
        """Format each element (a Struct, a mapping or a sequence) as one CSV line.

        ``columns`` is a list of names or a Struct type (its fields); ``header``
        emits the names first (even for an empty stream).

        >>> await orders.via(Framing.to_csv(Order)).run_with(FileSink.lines("orders.csv"))
        """
        from .._dsl.flow import Flow

        if isinstance(columns, type) and issubclass(columns, msgspec.Struct):
            names = [f.encode_name for f in msgspec.structs.fields(columns)]
            attrs = [f.name for f in msgspec.structs.fields(columns)]
        else:
            names = [str(c) for c in cast(Sequence[Any], columns)]
            attrs = names
        return Flow(Module.of(_EncodeCsv(names, attrs, header, delimiter)))


class _EncodeCsv(Stage):
    name = "to_csv"

    def __init__(self, names: list[str], attrs: list[str], header: bool, delimiter: str) -> None:
        self.names = names
        self.attrs = attrs
        self.header = header
        self.delimiter = delimiter

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return _EncodeCsvLogic(self), None


class _EncodeCsvLogic(StageLogic):
    def __init__(self, stage: _EncodeCsv) -> None:
        self.stage = stage
        self.buf = io.StringIO()
        self.writer = csv.writer(self.buf, delimiter=stage.delimiter, lineterminator="\n")

    def _format(self, rows: list[Sequence[Any]]) -> list[str]:
        buf = self.buf
        buf.seek(0)
        buf.truncate()
        self.writer.writerows(rows)
        return buf.getvalue().split("\n")[:-1]

    def on_start(self) -> list[Any]:
        return self._format([self.stage.names]) if self.stage.header else []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        attrs = self.stage.attrs
        rows: list[Sequence[Any]] = []
        for x in chunk:
            if isinstance(x, msgspec.Struct):
                rows.append([getattr(x, a) for a in attrs])
            elif isinstance(x, dict):
                rows.append([x.get(a, "") for a in attrs])
            else:
                rows.append(x)
        return self._format(rows)
