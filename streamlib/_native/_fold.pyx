"""Compiled twin of ``functools.reduce(f, chunk, acc)`` for the fold sinks.

``fold_chunk(f, chunk, acc)`` folds a list with ``f`` from ``acc`` and returns
the result, exactly as ``functools.reduce`` does: same calls in the same order,
same result (``acc`` itself for an empty chunk), an exception from ``f``
propagates unchanged. Two things make it faster: ``f`` is called through the
vectorcall protocol (no argument tuple), and when ``f`` is ``operator.add``
runs of exact ``int`` (or exact ``float``) operands are added in C, boxing the
result once per run instead of once per element. Python's own ``int + int``
and ``float + float`` give the same values, so the result is identical.
"""

import operator
from functools import reduce

from cpython.object cimport PyObject

cdef extern from "Python.h":
    ctypedef PyObject* (*vectorcallfunc)(PyObject*, PyObject**, size_t, PyObject*)
    PyObject* PyObject_Vectorcall(PyObject*, PyObject**, size_t, PyObject*)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET
    PyObject* PyNumber_Add(PyObject*, PyObject*)
    PyObject* PyErr_Occurred()
    int PyLong_CheckExact(PyObject*)
    int PyFloat_CheckExact(PyObject*)
    long long PyLong_AsLongLongAndOverflow(PyObject*, int*)
    PyObject* PyLong_FromLongLong(long long)
    double PyFloat_AS_DOUBLE(PyObject*)
    PyObject* PyFloat_FromDouble(double)
    Py_ssize_t PyList_GET_SIZE(PyObject*)
    PyObject* PyList_GET_ITEM(PyObject*, Py_ssize_t)
    void incref "Py_INCREF"(PyObject*)
    void decref "Py_DECREF"(PyObject*)
    void xdecref "Py_XDECREF"(PyObject*)

from libc.limits cimport LLONG_MAX, LLONG_MIN

cdef object _add = operator.add


cdef int _raise_set_error() except -1:
    """Propagate the exception that a C-level call left set."""
    return -1


cdef PyObject* _add_ints(PyObject* acc, PyObject* chunk, Py_ssize_t* pos) noexcept:
    """Add exact ints from chunk[pos] on in C while the sum fits a long long.

    Advances ``pos`` past the elements added and returns the new sum (a new
    reference; NULL when boxing it failed). Adds nothing when the first element
    does not qualify (``pos`` unchanged, the return value is then meaningless).
    ``acc`` must be an exact int.
    """
    cdef int overflow = 0
    cdef long long s, v
    cdef Py_ssize_t i = pos[0]
    cdef PyObject* item
    s = PyLong_AsLongLongAndOverflow(acc, &overflow)
    if overflow:
        return NULL
    while i < PyList_GET_SIZE(chunk):
        item = PyList_GET_ITEM(chunk, i)
        if not PyLong_CheckExact(item):
            break
        v = PyLong_AsLongLongAndOverflow(item, &overflow)
        if overflow or (v > 0 and s > LLONG_MAX - v) or (v < 0 and s < LLONG_MIN - v):
            break
        s += v
        i += 1
    if i == pos[0]:
        return NULL
    pos[0] = i
    return PyLong_FromLongLong(s)


cdef PyObject* _add_floats(PyObject* acc, PyObject* chunk, Py_ssize_t* pos) noexcept:
    """Like ``_add_ints`` for exact floats (``acc`` an exact float)."""
    cdef double s = PyFloat_AS_DOUBLE(acc)
    cdef Py_ssize_t i = pos[0]
    cdef PyObject* item
    while i < PyList_GET_SIZE(chunk):
        item = PyList_GET_ITEM(chunk, i)
        if not PyFloat_CheckExact(item):
            break
        s += PyFloat_AS_DOUBLE(item)
        i += 1
    if i == pos[0]:
        return NULL
    pos[0] = i
    return PyFloat_FromDouble(s)


def fold_chunk(f, chunk, acc):
    """``functools.reduce(f, chunk, acc)``, compiled (for a list ``chunk``)."""
    if type(chunk) is not list:
        return reduce(f, chunk, acc)
    cdef PyObject* cur = <PyObject*>acc
    cdef PyObject* fp = <PyObject*>f
    cdef PyObject* ch = <PyObject*>chunk
    cdef PyObject* item
    cdef PyObject* r
    cdef PyObject* args[3]
    cdef Py_ssize_t i = 0, j
    cdef bint is_add = f is _add
    incref(cur)
    while i < PyList_GET_SIZE(ch):
        if is_add:
            j = i
            r = NULL
            if PyLong_CheckExact(cur):
                r = _add_ints(cur, ch, &i)
            elif PyFloat_CheckExact(cur):
                r = _add_floats(cur, ch, &i)
            if i != j:
                if r == NULL:
                    break
                decref(cur)
                cur = r
                continue
            # Not a run of plain numbers: one element the ordinary way.
            item = PyList_GET_ITEM(ch, i)
            incref(item)
            r = PyNumber_Add(cur, item)
        else:
            item = PyList_GET_ITEM(ch, i)
            incref(item)
            args[0] = NULL
            args[1] = cur
            args[2] = item
            r = PyObject_Vectorcall(fp, &args[1], 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
        decref(item)
        if r == NULL:
            break
        decref(cur)
        cur = r
        i += 1
    else:
        result = <object>cur
        decref(cur)
        return result
    decref(cur)
    _raise_set_error()
