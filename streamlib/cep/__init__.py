"""Complex event processing: patterns over a keyed stream, compiled to an NFA.

>>> from streamlib.cep import Pattern
>>> p = Pattern.begin("fail").where(lambda e: not e.ok).times(3).followed_by("ok").where(lambda e: e.ok)
>>> source.with_timestamps(ts).key_by(user).match(p.within(timedelta(minutes=1)))

See docs/cep.md for each construct and the exact semantics.
"""

from ._pattern import (
    Pattern,
    SkipStrategy,
    no_skip,
    skip_past_last_event,
    skip_to_first,
    skip_to_next,
)
from ._results import LateEventError, Match, Timeout

__all__ = [
    "LateEventError",
    "Match",
    "Pattern",
    "SkipStrategy",
    "Timeout",
    "no_skip",
    "skip_past_last_event",
    "skip_to_first",
    "skip_to_next",
]
