"""Patterns: match yields Match[key, event]; timeouts take a Sink of Timeout[key, event]."""

from __future__ import annotations

from datetime import timedelta
from typing import reveal_type

from streamlib import Keep, Sink, Source
from streamlib.cep import Match, Pattern, Timeout

Login = tuple[str, int, str]


def failed(e: Login) -> bool:
    return e[2] == "fail"


def more_than_failures(e: Login, ctx: dict[str, list[Login]]) -> bool:
    return len(ctx["fail"]) > 2


pattern: Pattern[Login] = Pattern.begin("fail").where(failed).times(3).followed_by("ok").where(more_than_failures)


async def main() -> None:
    keyed = Source.from_iterable([("ann", 1, "fail")]).with_timestamps(lambda e: e[1]).key_by(lambda e: e[0])
    matches = keyed.match(pattern.within(timedelta(minutes=1)))
    reveal_type(matches)  # R: Source[Match[str, tuple[str, int, str]], None]
    for m in await matches.run_with(Sink.collect()):
        reveal_type(m.events)  # R: dict[str, list[tuple[str, int, str]]]
    def seen(t: Timeout[str, Login]) -> None:
        reveal_type(t.deadline)  # R: int
    with_timeouts = keyed.match(pattern.within(60_000), timeouts=Sink.foreach(seen), timeouts_mat=Keep.right)
    reveal_type(with_timeouts)  # R: Source[Match[str, tuple[str, int, str]], Future[None]]
    keyed.match(pattern, time="wall")  # E: call-overload
    one: Match[str, Login] = Match("ann", {})
    reveal_type(one.key)  # R: str
