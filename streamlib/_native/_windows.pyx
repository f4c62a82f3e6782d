"""Compiled twins of the window kernels in ``streamlib/_time/kernels.py``.

``update_fixed`` (tumbling and hopping windows), ``update_count`` (count
windows) and ``max_timestamp`` (a chunk's largest event time, for watermarks)
follow the contract in that module's docstrings exactly: the same state, the
same contents of ``touched`` / ``created`` / ``late`` / ``full``, the same
calls of user functions in the same order, and an exception from one of them
propagates unchanged with the elements before it applied. The other kernels
(sessions, sliding windows) have no compiled twin; the switch uses the pure ones.

What makes them faster than the interpreter running the pure code:

* extractors read without a Python frame: ``operator.itemgetter(k)`` becomes
  one ``PyObject_GetItem``, ``operator.attrgetter(name)`` one
  ``PyObject_GetAttr``, a :class:`~streamlib._dsl.fields.Field` either of them
  (decided per element type as the pure ``Field`` does); any other function is
  called through vectorcall;
* the built-in aggregations (count, sum, min, max, mean) are recognised by
  their ``create``/``add`` functions and applied inline, with the same Python
  operations those functions perform (``+``, ``<``, ``>``, ``+=`` on the mean's
  ``[sum, count]`` list), so results are identical, not just equal;
* window starts are computed in C ``long long`` arithmetic when the timestamp
  and the window parameters are exact ints well inside its range (else with
  Python ints, as the pure code does).
* tumbling windows: within one call, each key's current window keeps its
  accumulator in a slot (found by the key alone, no ``(key, start)`` tuple
  built or hashed) and is written into ``accs`` when the key moves to another
  window and when the call ends, also by an exception; so ``accs`` ends as the
  pure kernel leaves it, with one dict write per window and call instead of
  one per element.

Containers of another type than the pure code expects (a dict subclass for the
state, ...) make a call fall back to the pure kernel.
"""

cimport cython
from cpython.object cimport PyObject, Py_TYPE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.limits cimport LLONG_MAX, LLONG_MIN

import operator

from .._dsl.fields import Field
from .._time import aggregations as _aggs
from .._time import kernels as _pure

cdef extern from "Python.h":
    int PyLong_CheckExact(object)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    int PyObject_RichCompareBool(object, object, int) except -1
    int Py_LT
    int Py_GT

cdef object _itemgetter = operator.itemgetter
cdef object _attrgetter = operator.attrgetter
cdef object _Field = Field
cdef object _MISSING = _pure.MISSING

# Timestamps and window parameters within +-2**61 take the C path: no sum or
# difference of two of them can overflow a long long.
cdef long long _BOUND = 2305843009213693952

cdef enum:
    G_SELF = 0   # no extractor: the element itself
    G_CALL = 1   # call the function
    G_ITEM = 2   # e[name]
    G_ATTR = 3   # getattr(e, name)
    G_FIELD = 4  # e[name] or getattr(e, name), per element type

cdef enum:
    A_GENERIC = 0
    A_COUNT = 1
    A_SUM = 2
    A_MIN = 3
    A_MAX = 4
    A_MEAN = 5


@cython.final
cdef class _Get:
    """One extractor, resolved to the cheapest way of applying it."""

    cdef int kind
    cdef object fn
    cdef object name
    cdef object field
    cdef void* last_type
    cdef bint last_item

    cdef inline object get(self, object e):
        cdef int kind = self.kind
        if kind == G_ITEM:
            return e[self.name]
        if kind == G_ATTR:
            return getattr(e, self.name)
        if kind == G_FIELD:
            if <void*>Py_TYPE(e) != self.last_type:
                self.last_item = self.field.uses_item(type(e))
                self.last_type = <void*>Py_TYPE(e)
            if self.last_item:
                return e[self.name]
            return getattr(e, self.name)
        if kind == G_SELF:
            return e
        return self.fn(e)


@cython.final
cdef class _Slot:
    """A key's current window in one ``update_fixed`` call: its key in accs, start and accumulator."""

    cdef object wk
    cdef long long start
    cdef object acc


cdef int _flush(dict seen, dict accs) except -1:
    """Store the accumulators kept in slots into ``accs``; forget the slots."""
    cdef _Slot slot
    for x in seen.values():
        slot = <_Slot>x
        if slot.wk is not None:
            accs[slot.wk] = slot.acc
    seen.clear()
    return 0


cdef _Get _getter(object f):
    cdef _Get g = _Get.__new__(_Get)
    g.kind = G_CALL
    g.fn = f
    g.last_type = NULL
    if f is None:
        g.kind = G_SELF
    elif type(f) is _itemgetter:
        args = f.__reduce__()[1]
        if len(args) == 1:
            g.kind = G_ITEM
            g.name = args[0]
    elif type(f) is _attrgetter:
        args = f.__reduce__()[1]
        if len(args) == 1 and type(args[0]) is str and "." not in args[0]:
            g.kind = G_ATTR
            g.name = args[0]
    elif type(f) is _Field:
        g.kind = G_FIELD
        g.name = f.name
        g.field = f
    return g


cdef int _agg_kind(object create, object add):
    if create is _aggs._one and add is _aggs._plus_one:
        return A_COUNT
    if create is _aggs._identity:
        if add is operator.add:
            return A_SUM
        if add is min:
            return A_MIN
        if add is max:
            return A_MAX
    if create is _aggs._mean_create and add is _aggs._mean_add:
        return A_MEAN
    return A_GENERIC


cdef inline object _create(int agg, object create, object v):
    if agg == A_COUNT:
        return 1
    if agg == A_SUM or agg == A_MIN or agg == A_MAX:
        return v
    if agg == A_MEAN:
        return [v, 1]
    return create(v)


cdef inline object _add(int agg, object add, object acc, object v):
    if agg == A_SUM:
        return acc + v
    if agg == A_COUNT:
        return acc + 1
    if agg == A_MIN:
        return v if PyObject_RichCompareBool(v, acc, Py_LT) else acc
    if agg == A_MAX:
        return v if PyObject_RichCompareBool(v, acc, Py_GT) else acc
    if agg == A_MEAN and type(acc) is list and len(<list>acc) >= 2:
        x = (<list>acc)[0]
        x += v
        (<list>acc)[0] = x
        x = (<list>acc)[1]
        x += 1
        (<list>acc)[1] = x
        return acc
    return add(acc, v)


cdef inline int _apply(int agg, object create, object add, dict accs, object wk, object v,
                       set touched, list created) except -1:
    """One element's value into window ``wk``: ``create`` or ``add``, then the bookkeeping."""
    cdef PyObject* found = PyDict_GetItemWithError(accs, wk)
    if found == NULL:
        accs[wk] = _create(agg, create, v)
        created.append(wk)
    else:
        acc = <object>found
        accs[wk] = _add(agg, add, acc, v)
    touched.add(wk)
    return 0


cdef inline bint _small(object x, long long* out):
    """``x`` is an exact int within +-2**61 (its value in ``out``)."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(x):
        return False
    v = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow or v >= _BOUND or v <= -_BOUND:
        return False
    out[0] = v
    return True


cdef long long _clamp(object x):
    """``x`` (a Python int) clamped to the long long range."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow > 0:
        return LLONG_MAX
    if overflow < 0:
        return LLONG_MIN
    return v


@cython.cdivision(True)
def update_fixed(chunk, ts_of, key_of, value_of, size, step, offset, create, add, accs, closed_to,
                 touched, created, late):
    """Tumbling and hopping windows (see ``streamlib._time.kernels.update_fixed``)."""
    if not (type(chunk) is list and type(accs) is dict and type(touched) is set
            and type(created) is list and type(late) is list and PyLong_CheckExact(closed_to)):
        return _pure.PURE["update_fixed"](
            chunk, ts_of, key_of, value_of, size, step, offset, create, add, accs, closed_to,
            touched, created, late)
    cdef _Get tg = _getter(ts_of), kg = _getter(key_of), vg = _getter(value_of)
    cdef int agg = _agg_kind(create, add)
    cdef long long csize = 0, cstep = 0, coff = 0, t = 0, r, s, first, last
    cdef bint fast = (_small(size, &csize) and _small(step, &cstep) and _small(offset, &coff)
                  and 0 < cstep <= csize)
    cdef long long closed = _clamp(closed_to)
    cdef bint tumbling = size == step
    cdef dict d = <dict>accs
    cdef set tch = <set>touched
    cdef list crt = <list>created
    cdef list lt = <list>late
    # key -> its latest window in this call, whose accumulator is kept in the
    # _Slot (not stored into accs) until the key moves to another window or
    # the call ends, normally or by an exception.
    cdef dict seen = {}
    cdef _Slot slot
    cdef PyObject* found
    cdef Py_ssize_t i = -1
    try:
        while i + 1 < PyList_GET_SIZE(chunk):  # re-read: a user function may change the list
            i += 1
            e = <object>PyList_GET_ITEM(chunk, i)
            ts = tg.get(e)
            k = kg.get(e)
            if fast and _small(ts, &t):
                if tumbling:
                    r = (t - coff) % csize
                    if r < 0:
                        r += csize
                    s = t - r
                    if s + csize <= closed:
                        lt.append((e, ts, k, s, s + csize))
                        continue
                    v = vg.get(e)
                    found = PyDict_GetItemWithError(seen, k)
                    if found != NULL:
                        slot = <_Slot>found
                        if slot.start == s:  # the key's current window in this chunk
                            slot.acc = _add(agg, add, slot.acc, v)
                            continue
                        d[slot.wk] = slot.acc  # the key moved on to another window
                    else:
                        slot = _Slot.__new__(_Slot)
                        seen[k] = slot
                        slot.wk = None
                    wk = (k, s)
                    found = PyDict_GetItemWithError(d, wk)
                    if found == NULL:
                        acc = _create(agg, create, v)
                        d[wk] = acc
                        crt.append(wk)
                    else:
                        acc = _add(agg, add, <object>found, v)
                        d[wk] = acc
                    tch.add(wk)
                    slot.wk = wk
                    slot.start = s
                    slot.acc = acc
                    continue
                r = (t - coff) % cstep
                if r < 0:
                    r += cstep
                last = t - r
                first = last - ((csize - 1 - (t - last)) / cstep) * cstep
                if first + csize <= closed:
                    lt.append((e, ts, k, first, first + csize))
                    continue
                v = vg.get(e)
                s = first
                while s <= last:
                    _apply(agg, create, add, d, (k, s), v, tch, crt)
                    s += cstep
                continue
            # Python arithmetic, exactly as the pure kernel.
            if seen:
                _flush(seen, d)
            if tumbling:
                start = ts - (ts - offset) % size
                if start + size <= closed_to:
                    lt.append((e, ts, k, start, start + size))
                    continue
                v = vg.get(e)
                _apply(agg, create, add, d, (k, start), v, tch, crt)
                continue
            plast = ts - (ts - offset) % step
            pfirst = plast - ((size - 1 - (ts - plast)) // step) * step
            if pfirst + size <= closed_to:
                lt.append((e, ts, k, pfirst, pfirst + size))
                continue
            v = vg.get(e)
            start = pfirst
            while start <= plast:
                _apply(agg, create, add, d, (k, start), v, tch, crt)
                start += step
    finally:
        _flush(seen, d)


@cython.boundscheck(True)
@cython.wraparound(True)
def update_count(chunk, key_of, value_of, n, create, add, counts, touched, full):
    """Count windows (see ``streamlib._time.kernels.update_count``)."""
    if not (type(chunk) is list and type(counts) is dict and type(touched) is dict and type(full) is list):
        return _pure.PURE["update_count"](chunk, key_of, value_of, n, create, add, counts, touched, full)
    cdef _Get kg = _getter(key_of), vg = _getter(value_of)
    cdef int agg = _agg_kind(create, add)
    cdef dict d = <dict>counts
    cdef dict tch = <dict>touched
    cdef list fl = <list>full
    cdef PyObject* found
    cdef Py_ssize_t i = -1
    while i + 1 < PyList_GET_SIZE(chunk):  # re-read: a user function may change the list
        i += 1
        e = <object>PyList_GET_ITEM(chunk, i)
        k = kg.get(e)
        v = vg.get(e)
        found = PyDict_GetItemWithError(d, k)
        if found == NULL:
            st = [0]
            d[k] = st
        else:
            st = <object>found
        total = st[0] + 1
        if len(st) == 1:
            acc = _create(agg, create, v)
            st.append(acc)
        else:
            acc = _add(agg, add, st[1], v)
            st[1] = acc
        st[0] = total
        if total % n == 0:
            fl.append((k, total, acc))
            del st[1]
        tch[k] = total


def max_timestamp(ts_of, chunk):
    """``max(map(ts_of, chunk))`` (see ``streamlib._time.kernels.max_timestamp``)."""
    if type(chunk) is not list or PyList_GET_SIZE(chunk) == 0:
        return _pure.PURE["max_timestamp"](ts_of, chunk)
    cdef _Get tg = _getter(ts_of)
    cdef long long cm = 0, cv = 0
    cdef int overflow = 0
    cdef bint m_small
    cdef Py_ssize_t i
    m = tg.get(<object>PyList_GET_ITEM(chunk, 0))
    m_small = PyLong_CheckExact(m)
    if m_small:
        cm = PyLong_AsLongLongAndOverflow(m, &overflow)
        m_small = not overflow
    i = 1
    while i < PyList_GET_SIZE(chunk):  # re-read: a user function may change the list
        v = tg.get(<object>PyList_GET_ITEM(chunk, i))
        i += 1
        if m_small and PyLong_CheckExact(v):
            cv = PyLong_AsLongLongAndOverflow(v, &overflow)
            if not overflow:
                if cv > cm:
                    m = v
                    cm = cv
                continue
        if PyObject_RichCompareBool(v, m, Py_GT):
            m = v
            m_small = PyLong_CheckExact(m)
            if m_small:
                cm = PyLong_AsLongLongAndOverflow(m, &overflow)
                m_small = not overflow
    return m
