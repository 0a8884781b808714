/*
 * Test bindings of dd.h (the Dependency Descriptor's parse, rewrite, reader and selectors), for
 * tests/unit/test_native_dd.py to compare with media/dependency_descriptor.py and media/av1.py.
 * Included by module.c after Python.h; any input gives a result, None or an exception.
 */
#ifndef ROOMCAST_NATIVE_DD_BINDING_H
#define ROOMCAST_NATIVE_DD_BINDING_H

#include "dd.h"

#define DD_RUN_MAX_SELECTORS 8

static PyObject *dd_bytes_tuple(const uint8_t *v, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLong(v[i]));
    return t;
}

static PyObject *dd_structure_tuple(const dd_structure *s) {
    PyObject *templates = PyList_New(s->ntemplates);
    for (int i = 0; templates && i < s->ntemplates; i++) {
        const dd_template *t = &s->templates[i];
        PyObject *fdiffs = PyTuple_New(t->nfdiffs);
        for (int k = 0; fdiffs && k < t->nfdiffs; k++)
            PyTuple_SET_ITEM(fdiffs, k, PyLong_FromLong(t->fdiffs[k]));
        PyList_SET_ITEM(templates, i,
                        Py_BuildValue("(iiNNN)", t->spatial, t->temporal,
                                      dd_bytes_tuple(t->dtis, s->dt_count), fdiffs,
                                      dd_bytes_tuple(t->chain_diffs, s->chain_count)));
    }
    PyObject *resolutions = Py_None;
    Py_INCREF(resolutions);
    if (s->has_resolutions) {
        Py_DECREF(resolutions);
        resolutions = PyList_New(s->nresolutions);
        for (int i = 0; resolutions && i < s->nresolutions; i++)
            PyList_SET_ITEM(resolutions, i, Py_BuildValue("(ii)", s->widths[i], s->heights[i]));
    }
    PyObject *layers = PyList_New(s->dt_count);
    for (int dt = 0; layers && dt < s->dt_count; dt++)
        PyList_SET_ITEM(layers, dt, Py_BuildValue("(ii)", s->dt_spatial[dt], s->dt_temporal[dt]));
    return Py_BuildValue("(iiiNNNNNk)", s->template_id_offset, s->dt_count, s->chain_count,
                         dd_bytes_tuple(s->protected_by, s->chain_count ? s->dt_count : 0),
                         templates, resolutions, layers,
                         dd_bytes_tuple(s->high_first, s->dt_count),
                         (unsigned long)s->all_targets);
}

static PyObject *dd_descriptor_tuple(const dd_descriptor *d, const dd_structure *attached) {
    PyObject *fdiffs = PyTuple_New(d->nfdiffs);
    for (int k = 0; fdiffs && k < d->nfdiffs; k++)
        PyTuple_SET_ITEM(fdiffs, k, PyLong_FromLong(d->fdiffs[k]));
    PyObject *mask = d->has_mask ? PyLong_FromUnsignedLong(d->mask) : (Py_INCREF(Py_None), Py_None);
    PyObject *structure = d->attached ? dd_structure_tuple(attached) : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("(iiiiiiNNNN(iii)N)", d->start_of_frame, d->end_of_frame,
                         d->template_id, d->frame_number, d->spatial, d->temporal,
                         dd_bytes_tuple(d->dtis, d->ndtis), fdiffs,
                         dd_bytes_tuple(d->chain_diffs, d->nchains), mask, d->custom_dtis,
                         d->custom_fdiffs, d->custom_chains, structure);
}

/* dd_parse_fields(raw, structure_raw or None) -> None (DdError) or (start, end, template id,
 * frame number, spatial, temporal, dtis, fdiffs, chain diffs, mask or None, (custom dtis,
 * fdiffs, chains), attached structure or None), against the structure that structure_raw
 * attaches (ValueError if it attaches none). A structure is (template id offset, dt count,
 * chain count, protected_by, [(spatial, temporal, dtis, fdiffs, chains)], resolutions or None,
 * decode target layers, targets high first, all targets). */
static PyObject *mod_dd_parse_fields(PyObject *mod, PyObject *args) {
    Py_buffer raw, structure_raw = {0};
    PyObject *structure_obj;
    if (!PyArg_ParseTuple(args, "y*O", &raw, &structure_obj)) return NULL;
    PyObject *result = NULL;
    dd_structure *s = PyMem_Malloc(2 * sizeof(dd_structure));
    const dd_structure *current = NULL;
    dd_descriptor d;
    if (!s) {
        PyErr_NoMemory();
        goto done;
    }
    if (structure_obj != Py_None) {
        if (PyObject_GetBuffer(structure_obj, &structure_raw, PyBUF_SIMPLE) < 0) goto done;
        int ok = dd_parse(structure_raw.buf, (size_t)structure_raw.len, NULL, &s[0], &d) == 0 &&
                 d.attached;
        PyBuffer_Release(&structure_raw);
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "structure_raw attaches no structure");
            goto done;
        }
        current = &s[0];
    }
    if (dd_parse(raw.buf, (size_t)raw.len, current, &s[1], &d) < 0) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else {
        result = dd_descriptor_tuple(&d, &s[1]);
    }
done:
    PyMem_Free(s);
    PyBuffer_Release(&raw);
    return result;
}

/* dd_rewrite(raw, frame_number, has_mask, mask, dt_count, cap) -> bytes or None. */
static PyObject *mod_dd_rewrite(PyObject *mod, PyObject *args) {
    Py_buffer raw;
    int frame_number, has_mask, dt_count;
    unsigned int mask;
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "y*iiIin", &raw, &frame_number, &has_mask, &mask, &dt_count,
                          &cap))
        return NULL;
    static uint8_t out[8192]; /* under the GIL */
    if (cap < 0 || cap > (Py_ssize_t)sizeof out) cap = sizeof out;
    long n = dd_rewrite(raw.buf, (size_t)raw.len, frame_number, has_mask, mask, dt_count, out,
                        (size_t)cap);
    PyBuffer_Release(&raw);
    if (n < 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, n);
}

/* dd_run(selectors, [(raw, marker, timestamp, [(selector, op, a, b)])]) -> per packet
 * (valid, frame, spatial, temporal, structure frame, publisher mask, reader errors,
 * [(select, descriptor or None, (frame number, mask or None) written or None, needs keyframe,
 * started) per selector]): ONE dd_reader and `selectors` dd_selectors over a stream, as
 * SvcDownTrack drives them (descriptor after each forwarded packet). Before its packet, each
 * op: 0 = set_target(a, b), 1 = reset(). */
static PyObject *mod_dd_run(PyObject *mod, PyObject *args) {
    int nsel;
    PyObject *packets;
    if (!PyArg_ParseTuple(args, "iO!", &nsel, &PyList_Type, &packets)) return NULL;
    if (nsel < 1 || nsel > DD_RUN_MAX_SELECTORS) {
        PyErr_SetString(PyExc_ValueError, "1 to 8 selectors");
        return NULL;
    }
    dd_reader *r = PyMem_Malloc(sizeof(dd_reader));
    dd_selector *sel = PyMem_Malloc(sizeof(dd_selector) * (size_t)nsel);
    PyObject *out = PyList_New(0);
    if (!r || !sel || !out) {
        PyErr_NoMemory();
        goto fail;
    }
    dd_reader_init(r);
    for (int i = 0; i < nsel; i++) dd_selector_init(&sel[i]);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(packets); i++) {
        const char *raw;
        Py_ssize_t len;
        int marker;
        unsigned int timestamp;
        PyObject *ops;
        PyObject *item = PyList_GET_ITEM(packets, i);
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "y#iIO", &raw, &len, &marker, &timestamp, &ops)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "packet: (raw, marker, ts, ops)");
            goto fail;
        }
        PyObject *seq = PySequence_Fast(ops, "ops must be a sequence");
        if (!seq) goto fail;
        for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
            int which, op, a, b;
            PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
            if (!PyTuple_Check(o) || !PyArg_ParseTuple(o, "iiii", &which, &op, &a, &b) ||
                which < 0 || which >= nsel) {
                Py_DECREF(seq);
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "op: (selector, op, a, b)");
                goto fail;
            }
            if (op == 0) dd_selector_set_target(&sel[which], a, b);
            else dd_selector_reset(&sel[which]);
        }
        Py_DECREF(seq);
        dd_packet p;
        int valid = dd_read(r, (const uint8_t *)raw, (size_t)len, &p);
        PyObject *results = PyList_New(nsel);
        if (!results) goto fail;
        for (int k = 0; k < nsel; k++) {
            int m = dd_select(&sel[k], &p, marker, timestamp);
            PyObject *desc = Py_None, *written = Py_None;
            Py_INCREF(Py_None);
            Py_INCREF(Py_None);
            if (m >= 0) {
                uint8_t buf[DD_MAX_BYTES];
                int fn, has_mask;
                uint32_t mask;
                long n = dd_selector_descriptor(&sel[k], &p, buf, sizeof buf, &fn, &has_mask, &mask);
                if (n >= 0) {
                    Py_DECREF(desc);
                    Py_DECREF(written);
                    desc = PyBytes_FromStringAndSize((const char *)buf, n);
                    written = has_mask ? Py_BuildValue("(ik)", fn, (unsigned long)mask)
                                       : Py_BuildValue("(iO)", fn, Py_None);
                }
            }
            PyList_SET_ITEM(results, k,
                            Py_BuildValue("(iNNii)", m, desc, written,
                                          dd_selector_needs_keyframe(&sel[k]),
                                          dd_selector_started(&sel[k])));
        }
        PyObject *row;
        if (valid)
            row = Py_BuildValue("(iLiiLkKN)", 1, (long long)p.frame, p.d.spatial, p.d.temporal,
                                (long long)p.structure_frame, (unsigned long)p.publisher_mask,
                                (unsigned long long)r->errors, results);
        else
            row = Py_BuildValue("(iOOOOOKN)", 0, Py_None, Py_None, Py_None, Py_None, Py_None,
                                (unsigned long long)r->errors, results);
        if (!row || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            goto fail;
        }
        Py_DECREF(row);
    }
    PyMem_Free(r);
    PyMem_Free(sel);
    return out;
fail:
    PyMem_Free(r);
    PyMem_Free(sel);
    Py_XDECREF(out);
    return NULL;
}

#define DD_BINDING_METHODS                                                                      \
    {"dd_run", mod_dd_run, METH_VARARGS, "drive a DD reader and selectors (tests)"},            \
    {"dd_parse_fields", mod_dd_parse_fields, METH_VARARGS, "parse a DD (tests)"},               \
    {"dd_rewrite", mod_dd_rewrite, METH_VARARGS, "rewrite a DD (tests)"},

#endif
