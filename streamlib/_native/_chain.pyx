"""Compiled twin of :class:`streamlib._ops.chain.ChainLogic`.

The pure implementation applies one op to a whole chunk, then the next op to
the result. This one takes each element through *all* the ops in one C loop,
so no intermediate list is built per op, and calls user functions through the
vectorcall protocol (no argument tuple). The contract is the one in
``streamlib/_ops/chain.py``: same outputs, same partial output and exception
(annotated with the failing op's name) when a user function raises, ``take`` /
``take_while`` set ``completed``.

Per-op state (scan accumulator, take/drop counters, the drop_while flag, the
zip index) stays in the pure class's ``state`` list; the kernel reads it at the
start of each chunk and writes it back at the end (also after a failure), so
``on_start`` and ``merge_with`` are inherited from the pure class unchanged.
"""

from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdlib cimport malloc, free
from libc.limits cimport LLONG_MAX

from .._ops.chain import ChainLogic
from .._ops.chain import (
    COLLECT as _COLLECT,
    DROP as _DROP,
    DROP_WHILE as _DROP_WHILE,
    FILTER as _FILTER,
    FILTER_NOT as _FILTER_NOT,
    MAP as _MAP,
    MAP_CONCAT as _MAP_CONCAT,
    SCAN as _SCAN,
    TAKE as _TAKE,
    TAKE_WHILE as _TAKE_WHILE,
    ZIP_WITH_INDEX as _ZIP_WITH_INDEX,
)
from ..stage import annotate

cdef extern from "Python.h":
    ctypedef PyObject* (*vectorcallfunc)(PyObject*, PyObject**, size_t, PyObject*)
    vectorcallfunc PyVectorcall_Function(PyObject*)
    PyObject* PyObject_Vectorcall(PyObject*, PyObject**, size_t, PyObject*)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET
    PyObject* Py_True
    PyObject* Py_False
    PyObject* Py_None
    int PyObject_IsTrue(PyObject*)
    PyObject* PyNumber_Add(PyObject*, PyObject*)
    PyObject* PyObject_GetIter(PyObject*)
    PyObject* PyIter_Next(PyObject*)
    PyObject* PyErr_Occurred()
    PyObject* PyLong_FromLongLong(long long)
    long long PyLong_AsLongLongAndOverflow(PyObject*, int*)
    PyObject* PyTuple_New(Py_ssize_t)
    void PyTuple_SET_ITEM(PyObject*, Py_ssize_t, PyObject*)
    int PyList_Append(PyObject*, PyObject*)
    int PyList_CheckExact(PyObject*)
    int PyTuple_CheckExact(PyObject*)
    void incref "Py_INCREF"(PyObject*)
    void decref "Py_DECREF"(PyObject*)
    void xdecref "Py_XDECREF"(PyObject*)

# Op kinds, as C constants (checked against the pure module at import).
cdef enum:
    K_MAP = 0
    K_FILTER = 1
    K_FILTER_NOT = 2
    K_MAP_CONCAT = 3
    K_COLLECT = 4
    K_TAKE_WHILE = 5
    K_DROP_WHILE = 6
    K_SCAN = 7
    K_TAKE = 8
    K_DROP = 9
    K_ZIP_WITH_INDEX = 10

if (_MAP, _FILTER, _FILTER_NOT, _MAP_CONCAT, _COLLECT, _TAKE_WHILE, _DROP_WHILE,
        _SCAN, _TAKE, _DROP, _ZIP_WITH_INDEX) != tuple(range(11)):
    raise ImportError("streamlib._native._chain is out of date with streamlib._ops.chain")

# push() results: keep going, the chain has completed (stop the chunk), or an error is set.
cdef enum:
    GO = 0
    STOP = 1
    ERROR = -1


cdef inline int _truth(PyObject* r) noexcept:
    """PyObject_IsTrue with the common constants inlined; -1 with an error set."""
    if r == Py_True:
        return 1
    if r == Py_False or r == Py_None:
        return 0
    return PyObject_IsTrue(r)


cdef int _raise_set_error() except -1:
    """Propagate the exception that a C-level call left set."""
    return -1


cdef class _Kernel:
    """The ops of one chain as C arrays, and the element loop over a chunk.

    Every PyObject* field below is either borrowed from ``refs`` (functions)
    or an owned reference released on reload and in ``__dealloc__``.
    """

    cdef Py_ssize_t n
    cdef int* kinds
    cdef PyObject** fns          # borrowed from refs; NULL: truth test / addition
    cdef vectorcallfunc* vfs     # refreshed at each chunk
    cdef PyObject** accs         # owned: scan accumulators
    cdef PyObject** origs        # owned: counters as Python ints at the chunk's start
    cdef long long* count        # take/drop remaining, zip next index
    cdef long long* count0       # the same at the start of the chunk
    cdef char* big               # the Python counter does not fit a long long
    cdef char* dropping          # drop_while still dropping
    cdef list refs               # keeps the functions alive
    cdef public list out         # this chunk's output so far (the partial output on failure)
    cdef public bint completed
    cdef public Py_ssize_t at    # index of the op that raised

    def __cinit__(self, list ops):
        cdef Py_ssize_t n = len(ops)
        cdef Py_ssize_t m = n if n > 0 else 1
        cdef Py_ssize_t k
        cdef int kind
        self.n = 0
        self.kinds = <int*>malloc(m * sizeof(int))
        self.fns = <PyObject**>malloc(m * sizeof(PyObject*))
        self.vfs = <vectorcallfunc*>malloc(m * sizeof(vectorcallfunc))
        self.accs = <PyObject**>malloc(m * sizeof(PyObject*))
        self.origs = <PyObject**>malloc(m * sizeof(PyObject*))
        self.count = <long long*>malloc(m * sizeof(long long))
        self.count0 = <long long*>malloc(m * sizeof(long long))
        self.big = <char*>malloc(m * sizeof(char))
        self.dropping = <char*>malloc(m * sizeof(char))
        if (self.kinds == NULL or self.fns == NULL or self.vfs == NULL or self.accs == NULL
                or self.origs == NULL or self.count == NULL or self.count0 == NULL
                or self.big == NULL or self.dropping == NULL):
            raise MemoryError()
        for k in range(m):
            self.accs[k] = NULL
            self.origs[k] = NULL
        self.n = n
        self.refs = []
        self.out = []
        self.completed = False
        self.at = -1
        for k in range(n):
            kind = ops[k][0]
            fn = ops[k][1]
            if kind < K_MAP or kind > K_ZIP_WITH_INDEX:
                raise ValueError(f"unknown chain op kind {kind!r}")
            self.kinds[k] = kind
            self.refs.append(fn)
            if fn is None and (kind == K_FILTER or kind == K_FILTER_NOT or kind == K_SCAN):
                # As in the pure twin: filter(None, xs) tests truth, accumulate(xs, None) adds.
                self.fns[k] = NULL
            else:
                self.fns[k] = <PyObject*>fn
            self.vfs[k] = NULL
            self.count[k] = 0
            self.count0[k] = 0
            self.big[k] = 0
            self.dropping[k] = 0

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.accs != NULL and self.origs != NULL:
            for k in range(self.n):
                xdecref(self.accs[k])
                xdecref(self.origs[k])
        free(self.kinds)
        free(self.fns)
        free(self.vfs)
        free(self.accs)
        free(self.origs)
        free(self.count)
        free(self.count0)
        free(self.big)
        free(self.dropping)

    cdef int load(self, list state) except -1:
        """Read the per-op state (and refresh the vectorcall entry points)."""
        cdef Py_ssize_t k
        cdef int kind, overflow
        cdef long long v
        cdef PyObject* fn
        cdef PyObject* s
        for k in range(self.n):
            fn = self.fns[k]
            self.vfs[k] = PyVectorcall_Function(fn) if fn != NULL else NULL
            kind = self.kinds[k]
            if kind == K_SCAN:
                o = state[k]
                s = <PyObject*>o
                incref(s)
                xdecref(self.accs[k])
                self.accs[k] = s
            elif kind == K_DROP_WHILE:
                self.dropping[k] = 1 if state[k] else 0
            elif kind == K_TAKE or kind == K_DROP or kind == K_ZIP_WITH_INDEX:
                o = state[k]
                s = <PyObject*>o
                incref(s)
                xdecref(self.origs[k])
                self.origs[k] = s
                overflow = 0
                v = PyLong_AsLongLongAndOverflow(s, &overflow)
                if v == -1 and PyErr_Occurred() != NULL:
                    return -1
                self.big[k] = overflow != 0
                if overflow > 0:
                    # Never reached within a run; exact values are kept in Python ints.
                    v = 0 if kind == K_ZIP_WITH_INDEX else LLONG_MAX
                elif overflow < 0:
                    v = 0 if kind == K_ZIP_WITH_INDEX else -1
                self.count[k] = v
                self.count0[k] = v
        return 0

    cdef int store(self, list state) except -1:
        """Write the per-op state back in the pure class's representation."""
        cdef Py_ssize_t k
        cdef int kind
        cdef long long used
        for k in range(self.n):
            kind = self.kinds[k]
            if kind == K_SCAN:
                state[k] = <object>self.accs[k]
            elif kind == K_DROP_WHILE:
                state[k] = bool(self.dropping[k])
            elif kind == K_TAKE or kind == K_DROP or kind == K_ZIP_WITH_INDEX:
                if not self.big[k]:
                    state[k] = self.count[k]
                elif kind == K_ZIP_WITH_INDEX:
                    state[k] = <object>self.origs[k] + self.count[k]
                else:
                    used = self.count0[k] - self.count[k]
                    state[k] = <object>self.origs[k] - used
        return 0

    cdef inline PyObject* call1(self, Py_ssize_t k, PyObject* x) noexcept:
        cdef PyObject* args[2]
        args[0] = NULL
        args[1] = x
        cdef vectorcallfunc vf = self.vfs[k]
        if vf != NULL:
            return vf(self.fns[k], &args[1], 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
        return PyObject_Vectorcall(self.fns[k], &args[1], 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)

    cdef inline PyObject* call2(self, Py_ssize_t k, PyObject* a, PyObject* b) noexcept:
        cdef PyObject* args[3]
        args[0] = NULL
        args[1] = a
        args[2] = b
        cdef vectorcallfunc vf = self.vfs[k]
        if vf != NULL:
            return vf(self.fns[k], &args[1], 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
        return PyObject_Vectorcall(self.fns[k], &args[1], 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)

    cdef PyObject* zip_index(self, Py_ssize_t k) noexcept:
        """The zip index for op k as a new reference (NULL with an error set)."""
        cdef PyObject* offset
        cdef PyObject* index
        if not self.big[k]:
            return PyLong_FromLongLong(self.count[k])
        offset = PyLong_FromLongLong(self.count[k])
        if offset == NULL:
            return NULL
        index = PyNumber_Add(self.origs[k], offset)
        decref(offset)
        return index

    cdef int push(self, PyObject* x, Py_ssize_t k) noexcept:
        """Take element ``x`` (borrowed) through ops ``k``.. and append it to ``out``.

        Returns GO, or STOP once a take/take_while has completed the chain, or
        ERROR with the exception set and ``at`` naming the op that raised.
        Only C-API calls here, with explicit reference counting.
        """
        cdef PyObject* cur = x
        cdef PyObject* r
        cdef PyObject* it
        cdef PyObject* y
        cdef Py_ssize_t i, n = self.n
        cdef int t, status = GO, sub
        cdef int kind
        incref(cur)
        while k < n:
            kind = self.kinds[k]
            if kind == K_MAP:
                r = self.call1(k, cur)
                if r == NULL:
                    break
                decref(cur)
                cur = r
            elif kind == K_FILTER or kind == K_FILTER_NOT:
                if self.fns[k] == NULL:
                    t = _truth(cur)
                else:
                    r = self.call1(k, cur)
                    if r == NULL:
                        break
                    t = _truth(r)
                    decref(r)
                if t < 0:
                    break
                if (t == 0) == (kind == K_FILTER):
                    decref(cur)
                    return status
            elif kind == K_COLLECT:
                r = self.call1(k, cur)
                if r == NULL:
                    break
                decref(cur)
                cur = r
                if r == Py_None:
                    decref(cur)
                    return status
            elif kind == K_MAP_CONCAT:
                r = self.call1(k, cur)
                if r == NULL:
                    break
                decref(cur)
                cur = r  # the iterable; owned until the end of this branch
                sub = GO
                if PyList_CheckExact(r):
                    # Index loop reading the length each step, as a list iterator does.
                    i = 0
                    while i < PyList_GET_SIZE(<object>r):
                        y = PyList_GET_ITEM(<object>r, i)
                        i += 1
                        sub = self.push(y, k + 1)
                        if sub != GO:
                            break
                elif PyTuple_CheckExact(r):
                    i = 0
                    while i < PyTuple_GET_SIZE(<object>r):
                        y = PyTuple_GET_ITEM(<object>r, i)
                        i += 1
                        sub = self.push(y, k + 1)
                        if sub != GO:
                            break
                else:
                    it = PyObject_GetIter(r)
                    if it == NULL:
                        break
                    while True:
                        y = PyIter_Next(it)
                        if y == NULL:
                            if PyErr_Occurred() != NULL:
                                self.at = k
                                sub = ERROR
                            break
                        sub = self.push(y, k + 1)
                        decref(y)
                        if sub != GO:
                            break
                    decref(it)
                decref(cur)
                if sub == ERROR:
                    return ERROR
                return STOP if sub == STOP else status
            elif kind == K_TAKE_WHILE:
                r = self.call1(k, cur)
                if r == NULL:
                    break
                t = _truth(r)
                decref(r)
                if t < 0:
                    break
                if t == 0:
                    self.completed = True
                    decref(cur)
                    return STOP
            elif kind == K_DROP_WHILE:
                if self.dropping[k]:
                    r = self.call1(k, cur)
                    if r == NULL:
                        break
                    t = _truth(r)
                    decref(r)
                    if t < 0:
                        break
                    if t:
                        decref(cur)
                        return status
                    self.dropping[k] = 0
            elif kind == K_SCAN:
                if self.fns[k] == NULL:
                    r = PyNumber_Add(self.accs[k], cur)
                else:
                    r = self.call2(k, self.accs[k], cur)
                if r == NULL:
                    break
                decref(self.accs[k])
                incref(r)
                self.accs[k] = r
                decref(cur)
                cur = r
            elif kind == K_TAKE:
                if self.count[k] <= 0:
                    self.completed = True
                    decref(cur)
                    return STOP
                self.count[k] -= 1
                if self.count[k] == 0:
                    # This element still goes on; the chain stops after it.
                    self.completed = True
                    status = STOP
            elif kind == K_DROP:
                if self.count[k] > 0:
                    self.count[k] -= 1
                    decref(cur)
                    return status
            else:  # K_ZIP_WITH_INDEX
                r = PyTuple_New(2)
                if r == NULL:
                    break
                y = self.zip_index(k)
                if y == NULL:
                    decref(r)
                    break
                PyTuple_SET_ITEM(r, 0, cur)  # steals our reference to cur
                PyTuple_SET_ITEM(r, 1, y)
                self.count[k] += 1
                cur = r
            k += 1
        else:
            t = PyList_Append(<PyObject*>self.out, cur)
            decref(cur)
            if t < 0:
                self.at = n - 1
                return ERROR
            return status
        # A user function (or the runtime under it) raised at op k.
        self.at = k
        decref(cur)
        return ERROR

    cdef list run(self, list chunk):
        """Every element of ``chunk`` through every op; stops early on completion."""
        cdef Py_ssize_t i = 0
        cdef int status
        self.out = []
        while i < PyList_GET_SIZE(chunk):
            status = self.push(PyList_GET_ITEM(chunk, i), 0)
            i += 1
            if status == STOP:
                break
            if status == ERROR:
                _raise_set_error()
        return self.out


class NativeChainLogic(ChainLogic):
    """Runs a list of element-wise ops over each chunk, element by element in C."""

    def __init__(self, ops):
        ChainLogic.__init__(self, ops)
        self._kernel = None

    def merge_with(self, other):
        if not ChainLogic.merge_with(self, other):
            return False
        self._kernel = None
        return True

    def on_chunk(self, chunk):
        cdef _Kernel kernel = self._kernel
        if kernel is None:
            kernel = self._kernel = _Kernel(self.ops)
        if type(chunk) is not list:
            chunk = list(chunk)
        state = self.state
        kernel.load(state)
        kernel.completed = False
        try:
            out = kernel.run(chunk)
        except BaseException as error:
            annotate(error, self.ops[kernel.at][3] if 0 <= kernel.at < kernel.n else self.stage_name)
            self.partial = kernel.out
            kernel.out = []
            kernel.store(state)
            if kernel.completed:
                self.completed = True
            raise
        kernel.out = []
        kernel.store(state)
        if kernel.completed:
            self.completed = True
        return out
