/*
 * Test-only entry points to svc.h (tests/unit/test_native_svc.py drives them against
 * media/vp9.py and media/svc_downtrack.py). Any input: a result, or ValueError/TypeError.
 */
#ifndef ROOMCAST_NATIVE_SVC_BINDING_H
#define ROOMCAST_NATIVE_SVC_BINDING_H

#include <Python.h>

#include "svc.h"

/* An int item in [lo, hi], else ValueError (also for non-ints and huge ones). */
static int svc_int(PyObject *o, long lo, long hi, long *out) {
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_ValueError, "an int expected");
        return 0;
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(o, &overflow);
    if (value == -1 && PyErr_Occurred()) return 0;
    if (overflow || value < lo || value > hi) {
        PyErr_SetString(PyExc_ValueError, "out of range");
        return 0;
    }
    *out = value;
    return 1;
}

static PyObject *svc_descriptor_tuple(int ok, const vp9_descriptor *v) {
    return Py_BuildValue("(Oiiiiiiiiiiii)", ok ? Py_True : Py_False, v->header_size,
                         v->picture_id, v->inter_picture, v->flexible, v->begin, v->end,
                         v->temporal_id, v->switching_up, v->spatial_id, v->inter_layer,
                         v->tl0picidx, v->keyframe);
}

/* vp9_parse_fields(data, start=0, end=len) -> (ok, header_size, picture_id, inter_picture,
 * flexible, begin, end, temporal_id, switching_up, spatial_id, inter_layer, tl0picidx,
 * keyframe): vp9_parse on data[start, end), the fields whatever it answered. */
static PyObject *mod_vp9_parse_fields(PyObject *mod, PyObject *args) {
    Py_buffer data;
    Py_ssize_t start = 0, end = -1;
    if (!PyArg_ParseTuple(args, "y*|nn", &data, &start, &end)) return NULL;
    if (end == -1) end = data.len;
    if (start < 0 || end < 0 || start > data.len || end > data.len) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "start/end outside the data");
        return NULL;
    }
    vp9_descriptor v;
    int ok = vp9_parse(data.buf, (size_t)start, (size_t)end, &v);
    PyBuffer_Release(&data);
    return svc_descriptor_tuple(ok, &v);
}

/* vp9_run(ops) -> [(result, needs_keyframe, started, target_spatial, target_temporal,
 * limit_spatial, limit_temporal, current_spatial, current_temporal)] for one fresh selector,
 * one entry per op:
 *   (0, payload, marker): vp9_parse the payload, then vp9_select on the descriptor whatever the
 *                         parse answered (as svc_layers.py then SvcDownTrack.forward do);
 *   (1, spatial, temporal): vp9_selector_set_target;
 *   (2,): vp9_selector_reset.
 * result: vp9_select's answer for a packet, else 0. */
static PyObject *mod_vp9_run(PyObject *mod, PyObject *args) {
    PyObject *ops;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &ops)) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    vp9_selector s;
    vp9_selector_init(&s);
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(ops); n++) {
        PyObject *op = PyList_GET_ITEM(ops, n);
        long kind, a, b;
        int result = 0;
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 1 ||
            !svc_int(PyTuple_GET_ITEM(op, 0), 0, 2, &kind))
            goto bad;
        if (PyTuple_GET_SIZE(op) != (kind == 2 ? 1 : 3)) goto bad;
        if (kind == 0) {
            PyObject *payload = PyTuple_GET_ITEM(op, 1);
            if (!PyBytes_Check(payload) || !svc_int(PyTuple_GET_ITEM(op, 2), 0, 255, &b))
                goto bad;
            vp9_descriptor v;
            vp9_parse((const uint8_t *)PyBytes_AS_STRING(payload), 0,
                      (size_t)PyBytes_GET_SIZE(payload), &v);
            result = vp9_select(&s, &v, (int)b);
        } else if (kind == 1) {
            if (!svc_int(PyTuple_GET_ITEM(op, 1), -1000, 1000, &a) ||
                !svc_int(PyTuple_GET_ITEM(op, 2), -1000, 1000, &b))
                goto bad;
            vp9_selector_set_target(&s, (int)a, (int)b);
        } else {
            vp9_selector_reset(&s);
        }
        PyObject *row = Py_BuildValue("(iiiiiiiii)", result, vp9_selector_needs_keyframe(&s),
                                      vp9_selector_started(&s), s.target_spatial,
                                      s.target_temporal, s.limit_spatial, s.limit_temporal,
                                      s.current_spatial, s.current_temporal);
        if (!row || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(row);
    }
    return out;
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad op");
    Py_DECREF(out);
    return NULL;
}

/* munger_run(ops) -> ([result per op], highest, next_out, tags, reserved) for one munger
 * made by munger_init, ops:
 *   (0, in_seq, out_seq): munger_start (result None);
 *   (1, in_seq, send): munger_number (result its answer);
 *   (2,): munger_init again (result None). */
static PyObject *mod_munger_run(PyObject *mod, PyObject *args) {
    PyObject *ops;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &ops)) return NULL;
    static seq_munger m; /* the GIL is held: one caller at a time */
    munger_init(&m);
    PyObject *results = PyList_New(0), *tags = NULL, *reserved = NULL;
    if (!results) return NULL;
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(ops); n++) {
        PyObject *op = PyList_GET_ITEM(ops, n);
        long kind, a = 0, b = 0;
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 1 ||
            !svc_int(PyTuple_GET_ITEM(op, 0), 0, 2, &kind))
            goto bad;
        if (PyTuple_GET_SIZE(op) != (kind == 2 ? 1 : 3)) goto bad;
        if (kind != 2 && (!svc_int(PyTuple_GET_ITEM(op, 1), 0, 0xFFFF, &a) ||
                          !svc_int(PyTuple_GET_ITEM(op, 2), 0, 0xFFFF, &b)))
            goto bad;
        PyObject *result;
        if (kind == 0) {
            munger_start(&m, (uint16_t)a, (uint16_t)b);
            result = Py_NewRef(Py_None);
        } else if (kind == 1) {
            result = PyLong_FromLong(munger_number(&m, (uint16_t)a, b != 0));
        } else {
            munger_init(&m);
            result = Py_NewRef(Py_None);
        }
        if (!result || PyList_Append(results, result) < 0) {
            Py_XDECREF(result);
            goto fail;
        }
        Py_DECREF(result);
    }
    tags = PyList_New(MUNGER_SIZE);
    reserved = PyList_New(MUNGER_SIZE);
    if (!tags || !reserved) goto fail;
    for (int n = 0; n < MUNGER_SIZE; n++) {
        PyObject *t = PyLong_FromLong(m.tags[n]), *r = PyLong_FromLong(m.reserved[n]);
        if (!t || !r) {
            Py_XDECREF(t);
            Py_XDECREF(r);
            goto fail;
        }
        PyList_SET_ITEM(tags, n, t);
        PyList_SET_ITEM(reserved, n, r);
    }
    return Py_BuildValue("(NiiNN)", results, m.highest, m.next_out, tags, reserved);
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad op");
fail:
    Py_DECREF(results);
    Py_XDECREF(tags);
    Py_XDECREF(reserved);
    return NULL;
}

#define SVC_BINDING_METHODS                                                                    \
    {"vp9_parse_fields", mod_vp9_parse_fields, METH_VARARGS, "vp9_parse on bytes (tests)"},    \
        {"vp9_run", mod_vp9_run, METH_VARARGS, "drive one VP9 selector (tests)"},              \
        {"munger_run", mod_munger_run, METH_VARARGS, "drive one sequence munger (tests)"},

#endif
