"""Compiled twins of the window kernels in ``streamlib/_time/kernels.py``.

``update_fixed`` (tumbling and hopping windows), ``update_sessions`` and
``SessionCore`` (session windows), ``update_sliding``, ``fold_sliding`` and
``expire_sliding`` (sliding windows), ``update_count`` (count windows) and
``max_timestamp`` (a chunk's largest event time, for watermarks) follow the
contract in that module's docstrings exactly: the same state, the same contents
of ``touched`` / ``created`` / ``late`` / ``full`` and of the results, the same
calls of user functions in the same order, and an exception from one of them
propagates unchanged with the elements before it applied.

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
* sessions: the core's close times are C structs, in a FIFO while sessions end
  in the order they were scheduled and in a binary heap otherwise, ordered by
  (time, scheduling order) exactly as the pure core's heap of times and lists of
  keys per time; keys to forget wait in a C FIFO; times compare in C when they
  are exact ints within +-2**61 (else as Python compares them).
* sliding windows: a key's record times are read once into a C array and
  searched in C; ``count``, ``sum`` and ``mean`` over exact ints up to 2**40
  are folded with running sums (int addition is exact, so each window's value
  is the one the left-to-right fold gives), everything else by that fold.

Containers of another type than the pure code expects (a dict subclass for the
state, ...) make a call fall back to the pure kernel.
"""

cimport cython
from cpython.object cimport PyObject, Py_TYPE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memmove
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, Py_XINCREF
from libc.limits cimport LLONG_MAX, LLONG_MIN

import bisect
import copy
import operator

from .._dsl.fields import Field
from .._time import aggregations as _aggs
from .._time import kernels as _pure

cdef extern from "Python.h":
    int PyLong_CheckExact(object)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    int PyObject_RichCompareBool(object, object, int) except -1
    object PyLong_FromLongLong(long long)
    long long PyLong_AsLongLong(object) except? -1
    int Py_LT
    int Py_LE
    int Py_GT
    int Py_EQ

cdef object _itemgetter = operator.itemgetter
cdef object _attrgetter = operator.attrgetter
cdef object _Field = Field
cdef object _MISSING = _pure.MISSING

# Timestamps and window parameters within +-2**61 take the C path: no sum or
# difference of two of them can overflow a long long.
cdef long long _BOUND = 2305843009213693952
cdef long long _LIMIT = 4611686018427387904  # 2**62: times beyond it compare like any far time

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


cdef inline long long _clamp_time(object x) except? -1:
    """``x`` (an int) clamped to +-2**62: beyond every timestamp the fast paths take."""
    cdef long long v = _clamp(x)
    if v > _LIMIT:
        return _LIMIT
    if v < -_LIMIT:
        return -_LIMIT
    return v


# -- sessions -----------------------------------------------------------------------------

cdef object _NO_CLOSED = _pure.NO_CLOSED
cdef object _first = _pure._first
cdef object _PureSessionCore = _pure.SessionCore


cdef inline bint _cmp(object a, object b, int op) except -1:
    """``a < b`` (``op`` = Py_LT, ...) as Python computes it; in C for two exact ints."""
    cdef int o1 = 0, o2 = 0
    cdef long long x, y
    if PyLong_CheckExact(a) and PyLong_CheckExact(b):
        x = PyLong_AsLongLongAndOverflow(a, &o1)
        y = PyLong_AsLongLongAndOverflow(b, &o2)
        if not o1 and not o2:
            if op == Py_LT:
                return x < y
            if op == Py_LE:
                return x <= y
            if op == Py_GT:
                return x > y
            if op == Py_EQ:
                return x == y
    return PyObject_RichCompareBool(a, b, op)


cdef inline object _plus(object a, object b):
    """``a + b``; in C for two exact ints within +-2**61."""
    cdef long long x, y
    if _small(a, &x) and _small(b, &y):
        return PyLong_FromLongLong(x + y)
    return a + b


ctypedef struct _Due:
    PyObject* at    # the close time (a reference owned by the heap)
    PyObject* key   # the key to look at then (owned)
    PyObject* entry # the key's entry in ``sessions`` (owned), or NULL: look it up
    long long t     # ``at`` as a C number when ``small``
    long long seq   # scheduling order, among equal times
    bint small


cdef inline bint _before(_Due* a, _Due* b) except -1:
    """``a`` is due before ``b``: earlier time, or the same time scheduled earlier."""
    if a.small and b.small:
        if a.t != b.t:
            return a.t < b.t
        return a.seq < b.seq
    if PyObject_RichCompareBool(<object>a.at, <object>b.at, Py_LT):
        return True
    if PyObject_RichCompareBool(<object>b.at, <object>a.at, Py_LT):
        return False
    return a.seq < b.seq


ctypedef struct _Tomb:
    PyObject* at    # when to forget the key (owned), or NULL: the time is ``t``
    PyObject* key   # owned
    long long t


@cython.final
cdef class SessionCore:
    """Compiled twin of ``streamlib._time.kernels.SessionCore`` (same contract).

    The close index is a binary heap of C structs ordered by (time, scheduling
    order), which pops keys in the order of the pure core's heap of distinct
    times and its lists of keys per time; chunks are applied by the loop that
    also backs the compiled ``update_sessions``, pushing each created session
    straight into the heap.
    """

    cdef readonly object ts_of, key_of, value_of, gap, forget, create, add, merge, result, result_type
    cdef readonly dict sessions
    cdef _Get tg, kg, vg
    cdef int agg
    cdef _Due* heap     # ``n`` items, capacity ``cap``
    cdef Py_ssize_t n, cap
    cdef _Due* rq       # the in-order run: ``rn`` items from ``rh``, capacity ``rcap``
    cdef Py_ssize_t rh, rn, rcap
    cdef long long seq
    cdef _Tomb* tq      # FIFO of keys to forget: ``tn`` items from ``th``, capacity ``tcap``
    cdef Py_ssize_t th, tn, tcap

    def __cinit__(self):
        self.heap = NULL
        self.n = self.cap = 0
        self.rq = NULL
        self.rh = self.rn = self.rcap = 0
        self.tq = NULL
        self.th = self.tn = self.tcap = 0

    def __init__(self, ts_of, key_of, value_of, gap, create, add, merge, result, result_type, sessions):
        if type(sessions) is not dict:
            raise TypeError(f"SessionCore needs a dict of sessions, got {type(sessions).__name__}")
        self.ts_of, self.key_of, self.value_of = ts_of, key_of, value_of
        self.gap = gap
        self.forget = 2 * gap
        self.create, self.add, self.merge, self.result = create, add, merge, result
        self.result_type = result_type
        self.sessions = <dict>sessions
        self.tg, self.kg, self.vg = _getter(ts_of), _getter(key_of), _getter(value_of)
        self.agg = _agg_kind(create, add)

    def __dealloc__(self):
        self._clear()
        self._clear_tombs()
        PyMem_Free(self.heap)
        PyMem_Free(self.rq)
        PyMem_Free(self.tq)

    cdef void _clear(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_XDECREF(self.heap[i].at)
            Py_XDECREF(self.heap[i].key)
            Py_XDECREF(self.heap[i].entry)
        self.n = 0
        for i in range(self.rh, self.rh + self.rn):
            Py_XDECREF(self.rq[i].at)
            Py_XDECREF(self.rq[i].key)
            Py_XDECREF(self.rq[i].entry)
        self.rh = self.rn = 0

    cdef void _clear_tombs(self):
        cdef Py_ssize_t i
        for i in range(self.th, self.th + self.tn):
            Py_XDECREF(self.tq[i].at)
            Py_XDECREF(self.tq[i].key)
        self.th = self.tn = 0

    # -- the keys to forget ---------------------------------------------------------------

    cdef _Tomb* _tomb_slot(self) except NULL:
        """Room for one more tomb at the back of the FIFO (its fields are the caller's to set)."""
        cdef _Tomb* grown
        if self.th + self.tn == self.tcap:
            if self.th > self.tcap // 2:  # slide the live items to the front
                memmove(self.tq, self.tq + self.th, self.tn * sizeof(_Tomb))
                self.th = 0
            else:
                grown = <_Tomb*>PyMem_Realloc(self.tq, (self.tcap * 2 + 64) * sizeof(_Tomb))
                if grown == NULL:
                    raise MemoryError()
                self.tq = grown
                self.tcap = self.tcap * 2 + 64
        return &self.tq[self.th + self.tn]

    cdef int _tomb_at(self, object at, object k) except -1:
        """Queue ``k`` to be forgotten once ``closed_to >= at``."""
        cdef _Tomb* tb = self._tomb_slot()
        if _small(at, &tb.t):
            tb.at = NULL
        else:
            Py_INCREF(at)
            tb.at = <PyObject*>at
        Py_INCREF(k)
        tb.key = <PyObject*>k
        self.tn += 1
        return 0

    cdef int _tomb(self, object end, object k) except -1:
        """Queue ``k`` to be forgotten two gaps after ``end``, its closed session's end."""
        cdef long long e, f
        cdef _Tomb* tb
        if _small(end, &e) and _small(self.forget, &f):
            tb = self._tomb_slot()
            tb.at = NULL
            tb.t = e + f
            Py_INCREF(k)
            tb.key = <PyObject*>k
            self.tn += 1
            return 0
        return self._tomb_at(end + self.forget, k)

    cdef object _tomb_time(self, Py_ssize_t i):
        cdef _Tomb* tb = &self.tq[i]
        return PyLong_FromLongLong(tb.t) if tb.at == NULL else <object>tb.at

    cdef int _sort_tombs(self, Py_ssize_t first) except -1:
        """Sort the tombs queued from FIFO position ``first`` on by time (stable), unless they are in order."""
        cdef Py_ssize_t i, start = self.th + first, last = self.th + self.tn
        cdef bint ordered = True
        for i in range(start + 1, last):
            if self.tq[i].at == NULL and self.tq[i - 1].at == NULL:
                if self.tq[i].t < self.tq[i - 1].t:
                    ordered = False
                    break
            elif _cmp(self._tomb_time(i), self._tomb_time(i - 1), Py_LT):
                ordered = False
                break
        if ordered:
            return 0
        items = [(self._tomb_time(i), <object>self.tq[i].key) for i in range(start, last)]
        items.sort(key=_first)
        for i in range(start, last):  # ``items`` holds the references now
            Py_XDECREF(self.tq[i].at)
            Py_XDECREF(self.tq[i].key)
        self.tn = first
        for at, k in items:
            self._tomb_at(at, k)
        return 0

    # -- the close index --------------------------------------------------------------
    # Items in (time, scheduling order): a run of items scheduled in that order
    # (the usual case: sessions end in the order their elements came) waits in a
    # FIFO (``rq``: ``rn`` items from ``rh``), popped with no sifting and no jumps
    # through memory; the others in a binary heap. The first item is the smaller
    # of the two fronts.

    cdef int _push(self, object at, object k, object entry) except -1:
        """Schedule ``k`` at ``at``; ``entry`` is its list in ``sessions`` (or None).

        A key's entry stays the same list while the key has items here: a key
        is only deleted (forgotten) two gaps after its last open session
        closed, and closing it popped every item of the key.
        """
        cdef _Due item
        item.small = _small(at, &item.t)
        item.seq = self.seq
        self.seq += 1
        item.at = <PyObject*>at
        item.key = <PyObject*>k
        item.entry = NULL if entry is None else <PyObject*>entry
        if self.rn == 0 or _before(&self.rq[self.rh + self.rn - 1], &item):
            self._run_append(&item)
        else:
            self._heap_push(&item)
        return 0

    cdef int _run_append(self, _Due* item) except -1:
        cdef _Due* grown
        if self.rh + self.rn == self.rcap:
            if self.rh > self.rcap // 2:
                memmove(self.rq, self.rq + self.rh, self.rn * sizeof(_Due))
                self.rh = 0
            else:
                grown = <_Due*>PyMem_Realloc(self.rq, (self.rcap * 2 + 64) * sizeof(_Due))
                if grown == NULL:
                    raise MemoryError()
                self.rq = grown
                self.rcap = self.rcap * 2 + 64
        self.rq[self.rh + self.rn] = item[0]
        Py_INCREF(<object>item.at)
        Py_INCREF(<object>item.key)
        Py_XINCREF(item.entry)
        self.rn += 1
        return 0

    cdef int _heap_push(self, _Due* item) except -1:
        cdef _Due* grown
        cdef Py_ssize_t i, parent
        if self.n == self.cap:
            grown = <_Due*>PyMem_Realloc(self.heap, (self.cap * 2 + 64) * sizeof(_Due))
            if grown == NULL:
                raise MemoryError()
            self.heap = grown
            self.cap = self.cap * 2 + 64
        i = self.n
        try:
            while i > 0:
                parent = (i - 1) >> 1
                if not _before(item, &self.heap[parent]):
                    break
                self.heap[i] = self.heap[parent]
                i = parent
        finally:  # a failed comparison still leaves a heap, with the item in it
            self.heap[i] = item[0]
            Py_INCREF(<object>item.at)
            Py_INCREF(<object>item.key)
            Py_XINCREF(item.entry)
            self.n += 1
        return 0

    cdef _Due* _front(self) except? NULL:
        """The first item, or NULL when there is none."""
        if self.rn == 0:
            return &self.heap[0] if self.n else NULL
        if self.n and _before(&self.heap[0], &self.rq[self.rh]):
            return &self.heap[0]
        return &self.rq[self.rh]

    cdef bint _due(self, object closed_to, long long c, bint csmall) except -1:
        """The first item's time is at most ``closed_to`` (``c`` in C when ``csmall``)."""
        cdef _Due* first = self._front()
        if first == NULL:
            return False
        if first.small and csmall:
            return first.t <= c
        return _cmp(<object>first.at, closed_to, Py_LE)

    cdef object _pop(self, list entries):
        """The key of the first item (there is one), removed; its entry (or None) appended to ``entries``."""
        cdef _Due top
        cdef _Due last
        cdef Py_ssize_t i = 0, c, n
        if self.rn and not (self.n and _before(&self.heap[0], &self.rq[self.rh])):
            top = self.rq[self.rh]
            self.rh += 1
            self.rn -= 1
            if self.rn == 0:
                self.rh = 0
        else:
            top = self.heap[0]
            self.n -= 1
            n = self.n
            if n > 0:
                last = self.heap[n]
                try:
                    while True:
                        c = 2 * i + 1
                        if c >= n:
                            break
                        if c + 1 < n and _before(&self.heap[c + 1], &self.heap[c]):
                            c += 1
                        if not _before(&self.heap[c], &last):
                            break
                        self.heap[i] = self.heap[c]
                        i = c
                finally:
                    self.heap[i] = last
        k = <object>top.key
        Py_DECREF(k)  # the index's reference, now owned by ``k``
        Py_XDECREF(top.at)
        if top.entry == NULL:
            entries.append(None)
        else:
            entries.append(<object>top.entry)
            Py_DECREF(<object>top.entry)
        return k

    def schedule(self, at, k):
        """Look at key ``k`` again once ``closed_to >= at``."""
        self._push(at, k, None)

    # -- chunks -------------------------------------------------------------------------

    def update(self, chunk, closed_to, touched, late):
        """Apply ``chunk`` and schedule the sessions it created (see ``kernels.update_sessions``)."""
        cdef list created
        if not (type(chunk) is list and (touched is None or type(touched) is set) and type(late) is list):
            created = []
            if touched is None:
                touched = set()
            try:
                _pure.PURE["update_sessions"](
                    chunk, self.ts_of, self.key_of, self.value_of, self.gap, self.create, self.add,
                    self.merge, self.sessions, closed_to, touched, created, late)
            finally:
                for k, end in created:
                    self._push(end, k, None)
            return
        _session_chunk(<list>chunk, self.tg, self.kg, self.vg, self.gap, self.agg, self.create, self.add,
                       self.merge, self.sessions, closed_to, <set>touched, None, self, <list>late)

    # -- closing ------------------------------------------------------------------------

    def close(self, closed_to, bint emit, dirty, remove, list out):
        """Close the sessions ending at or before ``closed_to``, then forget the keys due."""
        cdef list keys, entries
        cdef long long c = 0
        cdef bint csmall = _small(closed_to, &c)
        if self._due(closed_to, c, csmall):
            keys = []
            entries = []
            while self._due(closed_to, c, csmall):
                keys.append(self._pop(entries))
            self._expire(keys, entries, closed_to, emit, dirty, out)
        self._forget_due(closed_to, remove)

    cdef int _forget_due(self, object closed_to, object remove) except -1:
        cdef dict sessions = self.sessions
        cdef PyObject* found
        cdef _Tomb* tb
        cdef long long c = 0, e = 0, f = 0
        cdef bint csmall = _small(closed_to, &c)
        cdef bint fsmall = _small(self.forget, &f)
        cdef bint same
        while self.tn:
            tb = &self.tq[self.th]
            if tb.at == NULL and csmall:
                if tb.t > c:
                    break
            elif not _cmp(self._tomb_time(self.th), closed_to, Py_LE):
                break
            at = self._tomb_time(self.th) if tb.at != NULL else None
            t = tb.t
            k = <object>tb.key
            Py_DECREF(k)  # the FIFO's reference, now ``k``'s
            Py_XDECREF(tb.at)
            self.th += 1
            self.tn -= 1
            if self.tn == 0:
                self.th = 0
            found = PyDict_GetItemWithError(sessions, k)
            if found == NULL:
                continue
            entry = <object>found
            if len(entry) != 2:
                continue
            end = entry[1]
            if at is None and fsmall and _small(end, &e):
                same = e + f == t
            else:
                same = _cmp(end + self.forget, PyLong_FromLongLong(t) if at is None else at, Py_EQ)
            if same:
                del sessions[k]
                remove(k)
        return 0

    def flush(self, dirty, list out):
        """End of stream: emit every open session (in order of close time) and forget the tombs."""
        cdef list keys = [], entries = []
        while self.n or self.rn:
            keys.append(self._pop(entries))
        self._expire(keys, entries, 2**63, True, dirty, out)
        self._clear_tombs()

    def restore(self):
        """Schedule every key of ``sessions`` (loaded from a store): open ones, or their forgetting."""
        cdef Py_ssize_t first = self.tn
        for k, entry in self.sessions.items():
            if len(entry) > 2:
                self._push(min(entry[3::3]), k, entry)
            else:
                self._tomb(entry[1], k)
        self._sort_tombs(first)

    @cython.boundscheck(True)
    @cython.wraparound(True)
    cdef int _expire(self, list keys, list entries, object closed_to, bint emit, object dirty,
                     list out) except -1:
        """Close what ``closed_to`` closes of the keys popped (``entries``: their lists, or None).

        The pure core looks at each key once (``dict.fromkeys``); here a key
        popped twice is looked at twice, which changes nothing: the first look
        closed what there was to close, and the second finds nothing closed and
        only schedules the key again (as the first did: one more item in the index).
        """
        cdef dict sessions = self.sessions
        cdef Py_ssize_t n, i, j
        cdef Py_ssize_t first = self.tn
        cdef PyObject* found
        result, make = self.result, self.result_type
        cdef set dset = <set>dirty if type(dirty) is set else None
        for j in range(len(keys)):
            k = keys[j]
            entry = entries[j]
            if entry is None:
                found = PyDict_GetItemWithError(sessions, k)
                if found == NULL:
                    continue
                entry = <object>found
            n = len(entry)
            if n == 5:  # the common case: one open session
                end = entry[3]
                if _cmp(end, closed_to, Py_GT):
                    self._push(end, k, entry)  # it grew since it was scheduled
                    continue
                if emit:
                    acc = entry[4]
                    out.append(make(k, entry[2], end, acc if result is None else result(acc)))
                entry[0] = entry[2]
                entry[1] = end
                del entry[2:]
            elif n > 5:
                done = [(entry[i + 1], entry[i], entry[i + 2]) for i in range(2, n, 3)
                        if _cmp(entry[i + 1], closed_to, Py_LE)]
                if not done:
                    self._push(min(entry[3::3]), k, entry)
                    continue
                done.sort(key=_first)
                if emit:
                    for end, start, acc in done:
                        out.append(make(k, start, end, acc if result is None else result(acc)))
                entry[2:] = [x for i in range(2, n, 3) if _cmp(entry[i + 1], closed_to, Py_GT)
                             for x in entry[i : i + 3]]
                entry[0], entry[1] = done[-1][1], done[-1][0]
            else:
                continue
            if dset is not None:
                dset.add(k)
            elif dirty is not None:
                dirty.add(k)
            if len(entry) > 2:
                self._push(min(entry[3::3]), k, entry)
            else:
                self._tomb(entry[1], k)
        if self.tn > first + 1:
            self._sort_tombs(first)
        return 0


@cython.boundscheck(True)
@cython.wraparound(True)
cdef int _session_chunk(list chunk, _Get tg, _Get kg, _Get vg, object gap, int agg, object create, object add,
                        object merge, dict sessions, object closed_to, set touched, list created,
                        SessionCore core, list late) except -1:
    """``kernels.update_sessions`` over ``chunk``; a created session goes to ``created`` or ``core``'s heap.

    When the timestamp and the gap are exact ints within +-2**61 and
    ``closed_to`` an exact int, the lateness rules are decided in C
    (``closed_to`` clamped to the long long range, beyond every ``ts + 2 * gap``
    of the fast path, so the comparisons come out the same).
    """
    cdef PyObject* found
    cdef Py_ssize_t i = -1, j, n, hit
    cdef long long t = 0, g = 0, c = 0
    cdef bint fast = _small(gap, &g) and PyLong_CheckExact(closed_to)
    cdef bint tfast
    if fast:
        c = _clamp(closed_to)
    while i + 1 < PyList_GET_SIZE(chunk):  # re-read: a user function may change the list
        i += 1
        e = <object>PyList_GET_ITEM(chunk, i)
        ts = tg.get(e)
        k = kg.get(e)
        tfast = fast and _small(ts, &t)
        end = PyLong_FromLongLong(t + g) if tfast else _plus(ts, gap)
        found = PyDict_GetItemWithError(sessions, k)
        if found == NULL:
            if (t + g <= c) if tfast else _cmp(end, closed_to, Py_LE):
                late.append((e, ts, k, ts, end))
                continue
            acc = _create(agg, create, vg.get(e))
            entry = [0, _NO_CLOSED, ts, end, acc]
            sessions[k] = entry
            if core is None:
                created.append((k, end))
            else:
                core._push(end, k, entry)
            if touched is not None:
                touched.add(k)
            continue
        entry = <object>found
        if _cmp(ts, entry[1], Py_LT):
            late.append((e, ts, k, entry[0], entry[1]))
            continue
        if (t + 2 * g <= c) if tfast else _cmp(_plus(end, gap), closed_to, Py_LE):
            late.append((e, ts, k, ts, end))
            continue
        hit = -1
        j = 2
        n = len(entry)
        while j < n:
            if _cmp(entry[j], end, Py_LT) and _cmp(ts, entry[j + 1], Py_LT):
                if hit < 0:
                    hit = j
                else:  # a second overlapping session: fold it into the first
                    if _cmp(entry[j], entry[hit], Py_LT):
                        entry[hit] = entry[j]
                    if _cmp(entry[j + 1], entry[hit + 1], Py_GT):
                        entry[hit + 1] = entry[j + 1]
                    entry[hit + 2] = merge(entry[hit + 2], entry[j + 2])
                    del entry[j : j + 3]
                    n -= 3
                    continue
            j += 3
        v = vg.get(e)
        if hit < 0:
            if (t + g <= c) if tfast else _cmp(end, closed_to, Py_LE):
                late.append((e, ts, k, ts, end))
                continue
            acc = _create(agg, create, v)
            entry += (ts, end, acc)
            if core is None:
                created.append((k, end))
            else:
                core._push(end, k, entry)
        else:
            if _cmp(ts, entry[hit], Py_LT):
                entry[hit] = ts
            if _cmp(end, entry[hit + 1], Py_GT):
                entry[hit + 1] = end
            entry[hit + 2] = _add(agg, add, entry[hit + 2], v)
        if touched is not None:
            touched.add(k)
    return 0


def update_sessions(chunk, ts_of, key_of, value_of, gap, create, add, merge, sessions, closed_to, touched,
                    created, late):
    """Session windows (see ``streamlib._time.kernels.update_sessions``)."""
    if not (type(chunk) is list and type(sessions) is dict and type(touched) is set
            and type(created) is list and type(late) is list):
        return _pure.PURE["update_sessions"](
            chunk, ts_of, key_of, value_of, gap, create, add, merge, sessions, closed_to, touched, created, late)
    _session_chunk(<list>chunk, _getter(ts_of), _getter(key_of), _getter(value_of), gap,
                   _agg_kind(create, add), create, add, merge, <dict>sessions, closed_to, <set>touched,
                   <list>created, None, <list>late)


# -- sliding windows ------------------------------------------------------------------------

cdef object _insort = bisect.insort
cdef object _ts_key = _pure._ts_key
cdef object _copy = copy.copy
cdef object _mean_merge = _aggs._mean_merge
cdef long long _ACC_BOUND = 1099511627776    # 2**40: running sums of such ints stay in a long long


@cython.boundscheck(True)
@cython.wraparound(True)
def update_sliding(chunk, ts_of, key_of, value_of, create, records, closed_to, touched, late, size):
    """Sliding windows (see ``streamlib._time.kernels.update_sliding``)."""
    if not (type(chunk) is list and type(records) is dict and type(touched) is dict and type(late) is list):
        return _pure.PURE["update_sliding"](
            chunk, ts_of, key_of, value_of, create, records, closed_to, touched, late, size)
    cdef _Get tg = _getter(ts_of), kg = _getter(key_of), vg = _getter(value_of)
    cdef dict recs_of = <dict>records
    cdef dict tch = <dict>touched
    cdef list lt = <list>late
    cdef PyObject* found
    cdef Py_ssize_t i = -1
    cdef int kind = 0
    if create is _aggs._one:
        kind = 1
    elif create is _aggs._identity:
        kind = 2
    while i + 1 < PyList_GET_SIZE(chunk):  # re-read: a user function may change the list
        i += 1
        e = <object>PyList_GET_ITEM(chunk, i)
        ts = tg.get(e)
        k = kg.get(e)
        if _cmp(_plus(ts, 1), closed_to, Py_LE):
            lt.append((e, ts, k, ts - size + 1, ts + 1))
            continue
        v = vg.get(e)
        item = [ts, 1 if kind == 1 else (v if kind == 2 else create(v))]
        found = PyDict_GetItemWithError(recs_of, k)
        if found == NULL:
            recs_of[k] = [item]
        else:
            recs = <object>found
            if _cmp(recs[-1][0], ts, Py_LE):
                recs.append(item)
            else:
                _insort(recs, item, key=_ts_key)
        found = PyDict_GetItemWithError(tch, k)
        if found == NULL:
            tch[k] = [ts]
        else:
            (<object>found).append(ts)


cdef inline Py_ssize_t _bisect_left(long long* t, Py_ssize_t lo, Py_ssize_t hi, long long x) noexcept:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if t[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _bisect_right(long long* t, Py_ssize_t lo, Py_ssize_t hi, long long x) noexcept:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < t[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef long long* _times(list recs, Py_ssize_t n) except? NULL:
    """The records' timestamps in a new C array, or NULL when one is not an exact int within +-2**61."""
    cdef long long* t = <long long*>PyMem_Malloc((n + 1) * sizeof(long long))
    cdef Py_ssize_t i
    if t == NULL:
        raise MemoryError()
    for i in range(n):
        r = recs[i]
        if not (type(r) is list and len(<list>r) == 2 and _small((<list>r)[0], &t[i])):
            PyMem_Free(t)
            return NULL
    return t


cdef int _sum_kind(list recs, Py_ssize_t a, Py_ssize_t b, object merge) except -1:
    """1: records a..b-1 hold small exact ints and merge adds; 2: mean lists of them; else 0."""
    cdef Py_ssize_t i
    cdef long long x
    if b - a >= 4194304:  # 2**22 records of up to 2**40 each: the sums could leave a long long
        return 0
    if merge is operator.add:
        for i in range(a, b):
            acc = (<list>recs[i])[1]
            if not (PyLong_CheckExact(acc) and _small(acc, &x) and -_ACC_BOUND < x < _ACC_BOUND):
                return 0
        return 1
    if merge is _mean_merge:
        for i in range(a, b):
            acc = (<list>recs[i])[1]
            if not (type(acc) is list and len(<list>acc) == 2):
                return 0
            for part in (<list>acc):
                if not (PyLong_CheckExact(part) and _small(part, &x) and -_ACC_BOUND < x < _ACC_BOUND):
                    return 0
        return 2
    return 0


@cython.boundscheck(True)
@cython.wraparound(True)
cdef int _fold(list recs, long long* t, Py_ssize_t n, long long* starts, Py_ssize_t m, long long size,
               object merge, object result, object result_type, object k, list out) except -1:
    """``kernels.fold_sliding`` for ascending ``starts`` over records whose times are ``t``."""
    cdef Py_ssize_t w, i, i0, i1, a = 0, b = 0
    cdef long long s0 = 0, s1 = 0
    cdef int kind
    if m == 0:
        return 0
    i0 = _bisect_left(t, 0, n, starts[0])
    i1 = _bisect_left(t, i0, n, starts[m - 1] + size)
    kind = _sum_kind(recs, i0, i1, merge) if m > 1 or i1 - i0 > 8 else 0
    for w in range(m):
        i0 = _bisect_left(t, 0 if w == 0 else i0, n, starts[w])
        i1 = _bisect_left(t, i0, n, starts[w] + size)
        if kind and i1 > i0:  # running sums: add what entered the window, take out what left it
            if w == 0:
                a = b = i0
            while b < i1:
                acc = (<list>recs[b])[1]
                if kind == 1:
                    s0 += PyLong_AsLongLong(acc)
                else:
                    s0 += PyLong_AsLongLong((<list>acc)[0])
                    s1 += PyLong_AsLongLong((<list>acc)[1])
                b += 1
            while a < i0:
                acc = (<list>recs[a])[1]
                if kind == 1:
                    s0 -= PyLong_AsLongLong(acc)
                else:
                    s0 -= PyLong_AsLongLong((<list>acc)[0])
                    s1 -= PyLong_AsLongLong((<list>acc)[1])
                a += 1
            if kind == 1:
                acc = PyLong_FromLongLong(s0)
            else:
                acc = [PyLong_FromLongLong(s0), PyLong_FromLongLong(s1)]
        else:
            if kind:  # an empty window (not from the operator): the plain fold, and no running sums after
                kind = 0
            acc = recs[i0][1]
            if not (PyLong_CheckExact(acc) or type(acc) is float):
                acc = _copy(acc)
            for i in range(i0 + 1, i1):
                r = (<list>recs[i])[1]
                if merge is operator.add:
                    acc = acc + r
                elif merge is min:
                    acc = r if PyObject_RichCompareBool(r, acc, Py_LT) else acc
                elif merge is max:
                    acc = r if PyObject_RichCompareBool(r, acc, Py_GT) else acc
                else:
                    acc = merge(acc, r)
        out.append(result_type(k, PyLong_FromLongLong(starts[w]), PyLong_FromLongLong(starts[w] + size),
                               acc if result is None else result(acc)))
    return 0


def fold_sliding(recs, starts, size, merge, result, result_type, k, out):
    """Sliding windows folded (see ``streamlib._time.kernels.fold_sliding``)."""
    cdef long long csize = 0
    cdef long long* t = NULL
    cdef long long* cs = NULL
    cdef Py_ssize_t n, m, i
    if type(recs) is list and type(starts) is list and type(out) is list and _small(size, &csize) and csize > 0:
        n = len(<list>recs)
        m = len(<list>starts)
        t = _times(<list>recs, n)
        if t != NULL:
            try:
                cs = <long long*>PyMem_Malloc((m + 1) * sizeof(long long))
                if cs == NULL:
                    raise MemoryError()
                for i in range(m):
                    if not _small((<list>starts)[i], &cs[i]) or (i and cs[i] <= cs[i - 1]):
                        break
                else:
                    _fold(<list>recs, t, n, cs, m, csize, merge, result, result_type, k, <list>out)
                    return
            finally:
                PyMem_Free(t)
                PyMem_Free(cs)
    _pure.PURE["fold_sliding"](recs, starts, size, merge, result, result_type, k, out)


def expire_sliding(recs, k, lo, closed_to, size, emit, merge, result, result_type, out):
    """Close a key's sliding windows (see ``streamlib._time.kernels.expire_sliding``)."""
    cdef long long csize = 0, clo, cto, due, x
    cdef long long* t = NULL
    cdef long long* starts = NULL
    cdef Py_ssize_t n, i, j, a, b, c, d, m
    if not (type(recs) is list and type(out) is list and PyLong_CheckExact(lo) and PyLong_CheckExact(closed_to)
            and _small(size, &csize) and csize > 0):
        return _pure.PURE["expire_sliding"](recs, k, lo, closed_to, size, emit, merge, result, result_type, out)
    n = len(<list>recs)
    t = _times(<list>recs, n)
    if t == NULL:
        return _pure.PURE["expire_sliding"](recs, k, lo, closed_to, size, emit, merge, result, result_type, out)
    try:
        clo = _clamp_time(lo)
        cto = _clamp_time(closed_to)
        if emit:
            # Left windows of t with lo < t + 1 <= closed_to, right windows of t with
            # lo < t + 1 + size <= closed_to that have a witness; both runs ascend: merge them.
            a = _bisect_right(t, 0, n, clo - 1)
            b = _bisect_right(t, a, n, cto - 1)
            c = _bisect_right(t, 0, n, clo - 1 - csize)
            d = _bisect_right(t, c, n, cto - 1 - csize)
            starts = <long long*>PyMem_Malloc((b - a + d - c + 1) * sizeof(long long))
            if starts == NULL:
                raise MemoryError()
            m = 0
            while a < b or c < d:
                if c < d:
                    j = _bisect_right(t, c, n, t[c])
                    if not (j < n and t[j] <= t[c] + csize):  # no witness: no right window
                        c += 1
                        continue
                if c >= d or (a < b and t[a] - csize + 1 <= t[c] + 1):
                    x = t[a] - csize + 1
                    a += 1
                else:
                    x = t[c] + 1
                    c += 1
                if m == 0 or starts[m - 1] != x:
                    starts[m] = x
                    m += 1
            _fold(<list>recs, t, n, starts, m, csize, merge, result, result_type, k, <list>out)
        i = _bisect_right(t, 0, n, cto - 1 - csize)
        if i == n:
            return i, None
        due = t[i] + 1 + csize
        j = _bisect_right(t, i, n, cto - 1)
        if j < n and t[j] + 1 < due:
            due = t[j] + 1
        return i, PyLong_FromLongLong(due)
    finally:
        PyMem_Free(t)
        PyMem_Free(starts)
