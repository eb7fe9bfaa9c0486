/* Optional accelerator for the message codec: the common case of protocol/messages, in C.
 *
 * Both directions are driven by specs built in Python from the same field tables as the
 * pure-Python writers and readers (protocol/messages/accel.py), and both only ever take the
 * common road: on anything unusual they return None and the caller runs the Python code,
 * which either handles it (extensions, ...) or raises the precise, field-naming error. So
 * this file never decides what is an error, only what is certainly fine:
 *
 * - write(spec, message) -> bytes | None: RFC 8949 §4.2.1 deterministic bytes. Every head
 *   is shortest, map keys come from the ascending table, absent optionals are left out.
 * - read_message(specs, data) -> message | None: accepts only bytes that are already in
 *   deterministic form (shortest heads, definite lengths, strictly ascending unsigned keys,
 *   no tags, no floats, nothing trailing) and whose every field is valid, so the value read
 *   re-encodes to exactly ``data`` (one content, one id) without a second pass.
 *
 * Hostile input: every read is bounds-checked against the end of the buffer; nesting is
 * bounded by the spec (finite), item counts by the spec's bounds, strings by theirs.
 *
 * Spec formats (see accel.py): a kind is a tuple whose first item is a code below.
 *
 * Values are read from and stored into the slots of attrs' frozen, slotted classes directly,
 * at offsets slot_offset() took from the classes' member descriptors when the specs were
 * built, after an exact type check of each object. Storing into fresh objects stands in for
 * ``cls(*args)``: accel.py only does so for classes whose __init__ does nothing else (no
 * validators, converters or post-init), exactly as copy and pickle restore such objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>
#include <string.h>

#include "_sha256.h"

enum { K_UINT = 0, K_TEXT = 1, K_CID = 2, K_ENUM = 3, K_LIST = 4, K_STRUCT = 5, K_CHECKED = 6, K_CONST = 7 };

#define MAX_ENTRIES 64
#define DEFER 1 /* "not the common road": the caller runs the Python code */

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* slot_offset(descriptor) -> int: where a __slots__ member lives in its objects. */
static PyObject *speedups_slot_offset(PyObject *self, PyObject *descriptor) {
    if (!PyObject_TypeCheck(descriptor, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a member descriptor (__slots__ entry)");
        return NULL;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_SetString(PyExc_TypeError, "not a writable object slot");
        return NULL;
    }
    return PyLong_FromSsize_t(member->offset);
}

/* A new instance of ``cls`` with its slots set from ``argv`` (references stolen); the
 * offsets tuple gives each argument's slot. */
static PyObject *fill_new(PyObject *cls, PyObject *offsets, PyObject **argv, Py_ssize_t n) {
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *obj = type->tp_alloc(type, 0);
    if (!obj) {
        for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(argv[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        SLOT(obj, PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i))) = argv[i];
    return obj;
}

/* --- writing ------------------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    unsigned char small[512];
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *data;
    if (b->data == b->small) {
        data = PyMem_Malloc(cap);
        if (data) memcpy(data, b->small, b->len);
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put_head(Buf *b, int major, uint64_t arg) {
    if (buf_reserve(b, 9) < 0) return -1;
    unsigned char *p = b->data + b->len;
    unsigned char m = (unsigned char)(major << 5);
    if (arg < 24) {
        p[0] = m | (unsigned char)arg;
        b->len += 1;
    } else if (arg <= 0xFF) {
        p[0] = m | 24;
        p[1] = (unsigned char)arg;
        b->len += 2;
    } else if (arg <= 0xFFFF) {
        p[0] = m | 25;
        p[1] = (unsigned char)(arg >> 8);
        p[2] = (unsigned char)arg;
        b->len += 3;
    } else if (arg <= 0xFFFFFFFFu) {
        p[0] = m | 26;
        for (int i = 0; i < 4; i++) p[1 + i] = (unsigned char)(arg >> (24 - 8 * i));
        b->len += 5;
    } else {
        p[0] = m | 27;
        for (int i = 0; i < 8; i++) p[1 + i] = (unsigned char)(arg >> (56 - 8 * i));
        b->len += 9;
    }
    return 0;
}

static int put_bytes(Buf *b, int major, const char *s, Py_ssize_t n) {
    if (put_head(b, major, (uint64_t)n) < 0 || buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

/* An int that is not a bool, as a uint64; DEFER if negative, too large or not an int. */
static int as_uint(PyObject *v, uint64_t *out) {
    if (!PyLong_Check(v) || PyBool_Check(v)) return DEFER;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return DEFER;
    }
    *out = (uint64_t)x;
    return 0;
}

static int write_map(Buf *b, PyObject *obj, PyObject *spec);

/* Returns 0 when written, DEFER, or -1 with an exception set. */
static int write_value(Buf *b, PyObject *v, PyObject *kind) {
    long code = PyLong_AsLong(PyTuple_GET_ITEM(kind, 0));
    uint64_t x;
    int r;
    switch (code) {
    case K_UINT:
        if ((r = as_uint(v, &x)) != 0) return r;
        return put_head(b, 0, x);
    case K_CONST:
        if ((r = as_uint(PyTuple_GET_ITEM(kind, 1), &x)) != 0) return r;
        return put_head(b, 0, x);
    case K_TEXT: {
        if (!PyUnicode_CheckExact(v)) return DEFER;
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (!s) { /* a lone surrogate has no UTF-8 form */
            PyErr_Clear();
            return DEFER;
        }
        if (n > PyLong_AsSsize_t(PyTuple_GET_ITEM(kind, 1))) return DEFER;
        return put_bytes(b, 3, s, n);
    }
    case K_CID: {
        if ((PyObject *)Py_TYPE(v) != PyTuple_GET_ITEM(kind, 1)) return DEFER;
        PyObject *raw = SLOT(v, PyLong_AsSsize_t(PyTuple_GET_ITEM(kind, 2)));
        if (!raw || !PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) >= 256) return DEFER;
        return put_bytes(b, 2, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
    }
    case K_ENUM: {
        if ((r = as_uint(v, &x)) != 0) return r;
        PyObject *members = PyTuple_GET_ITEM(kind, 1);
        int has = PyDict_Contains(members, v);
        if (has < 0) return -1;
        return has ? put_head(b, 0, x) : DEFER;
    }
    case K_LIST: {
        if (!PyTuple_CheckExact(v)) return DEFER;
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (n > PyLong_AsSsize_t(PyTuple_GET_ITEM(kind, 1))) return DEFER;
        if (put_head(b, 4, (uint64_t)n) < 0) return -1;
        PyObject *item = PyTuple_GET_ITEM(kind, 2);
        for (Py_ssize_t i = 0; i < n; i++)
            if ((r = write_value(b, PyTuple_GET_ITEM(v, i), item)) != 0) return r;
        return 0;
    }
    case K_STRUCT: /* write_map checks the exact type before reading slots */
        return write_map(b, v, PyTuple_GET_ITEM(kind, 2));
    case K_CHECKED: {
        /* a reader's range rule: call it; a refusal is the Python writer's to report */
        PyObject *ok = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(kind, 1), v,
                                                    PyTuple_GET_ITEM(kind, 2), NULL);
        if (!ok) {
            PyErr_Clear();
            return DEFER;
        }
        Py_DECREF(ok);
        return write_value(b, v, PyTuple_GET_ITEM(kind, 3));
    }
    }
    return DEFER;
}

/* getter: an offset into obj, or (offset, cls, offset) through a nested object of exactly
 * cls (the header). A borrowed reference, or NULL for "not set / not the expected type". */
static PyObject *get_slot(PyObject *obj, PyObject *getter) {
    if (PyLong_CheckExact(getter)) return SLOT(obj, PyLong_AsSsize_t(getter));
    PyObject *inner = SLOT(obj, PyLong_AsSsize_t(PyTuple_GET_ITEM(getter, 0)));
    if (!inner || (PyObject *)Py_TYPE(inner) != PyTuple_GET_ITEM(getter, 1)) return NULL;
    return SLOT(inner, PyLong_AsSsize_t(PyTuple_GET_ITEM(getter, 2)));
}

/* spec: (cls, entries); entries: tuple of (key, getter, absent, kind), getter None for a
 * CONST kind; absent: 0 required, 1 optional (absent when None), 2 optional list (absent when
 * None or empty). Borrowed slot values: the object keeps them alive while we write. */
static int write_map(Buf *b, PyObject *obj, PyObject *spec) {
    if ((PyObject *)Py_TYPE(obj) != PyTuple_GET_ITEM(spec, 0)) return DEFER;
    PyObject *entries = PyTuple_GET_ITEM(spec, 1);
    Py_ssize_t n = PyTuple_GET_SIZE(entries), present = 0;
    PyObject *values[MAX_ENTRIES];
    unsigned char skip[MAX_ENTRIES];
    int r;
    if (n > MAX_ENTRIES) return DEFER;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(entries, i);
        PyObject *getter = PyTuple_GET_ITEM(entry, 1);
        PyObject *v = getter == Py_None ? Py_None : get_slot(obj, getter);
        if (!v) return DEFER;
        values[i] = v;
        long absent = PyLong_AsLong(PyTuple_GET_ITEM(entry, 2));
        skip[i] = getter != Py_None && absent != 0 &&
                  (v == Py_None ||
                   (absent == 2 && PyTuple_CheckExact(v) && PyTuple_GET_SIZE(v) == 0));
        present += !skip[i];
    }
    if (put_head(b, 5, (uint64_t)present) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (skip[i]) continue;
        PyObject *entry = PyTuple_GET_ITEM(entries, i);
        uint64_t key;
        if ((r = as_uint(PyTuple_GET_ITEM(entry, 0), &key)) != 0) return r;
        if (put_head(b, 0, key) < 0) return -1;
        if ((r = write_value(b, values[i], PyTuple_GET_ITEM(entry, 3))) != 0) return r;
    }
    return 0;
}

static PyObject *write_message(PyObject *spec, PyObject *obj, PyObject *fallback) {
    Buf b = {0};
    b.data = b.small;
    b.cap = sizeof(b.small);
    int r = write_map(&b, obj, spec);
    PyObject *out = NULL;
    if (r == 0) {
        out = PyBytes_FromStringAndSize((const char *)b.data, b.len);
    } else if (r == DEFER) {
        out = fallback ? PyObject_CallOneArg(fallback, obj) : Py_NewRef(Py_None);
    }
    if (b.data != b.small) PyMem_Free(b.data);
    return out;
}

static PyObject *speedups_write(PyObject *self, PyObject *args) {
    PyObject *spec, *obj;
    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &spec, &obj)) return NULL;
    return write_message(spec, obj, NULL);
}

/* write_or(spec, fallback, message): fallback(message) where the C code defers. The order
 * lets functools.partial bind spec and fallback: no Python frame on the way to the bytes. */
static PyObject *speedups_write_or(PyObject *self, PyObject *args) {
    PyObject *spec, *fallback, *obj;
    if (!PyArg_ParseTuple(args, "O!OO", &PyTuple_Type, &spec, &fallback, &obj)) return NULL;
    return write_message(spec, obj, fallback);
}

/* --- reading ------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
} Reader;

/* One shortest-form, definite head; DEFER on anything else (including running out). */
static int read_head(Reader *r, int *major, uint64_t *arg) {
    if (r->p >= r->end) return DEFER;
    unsigned char ib = *r->p++;
    int ai = ib & 31;
    *major = ib >> 5;
    if (ai < 24) {
        *arg = (uint64_t)ai;
        return 0;
    }
    int size = ai == 24 ? 1 : ai == 25 ? 2 : ai == 26 ? 4 : ai == 27 ? 8 : 0;
    if (size == 0 || r->end - r->p < size) return DEFER; /* indefinite, reserved, truncated */
    uint64_t x = 0;
    for (int i = 0; i < size; i++) x = (x << 8) | r->p[i];
    r->p += size;
    /* §4.2.1: the argument must not fit a shorter form */
    uint64_t floor = size == 1 ? 24 : size == 2 ? 0x100 : size == 4 ? 0x10000 : 0x100000000ull;
    if (x < floor) return DEFER;
    *arg = x;
    return 0;
}

static PyObject *read_value(Reader *r, PyObject *kind, int *status);

/* args: a tuple of descriptors: an int (that entry's value), (0, constant), or
 * (1, cls, args, offsets) for a value built from some of the same entries (the header).
 * offsets None: call cls(*args); else fill a new instance's slots at those offsets. */
static PyObject *construct(PyObject *cls, PyObject *args, PyObject *offsets, PyObject **values,
                           int *status) {
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *argv[MAX_ENTRIES] = {NULL};
    if (n > MAX_ENTRIES) {
        *status = DEFER;
        return NULL;
    }
    Py_ssize_t built = 0;
    PyObject *result = NULL;
    for (; built < n; built++) {
        PyObject *d = PyTuple_GET_ITEM(args, built);
        PyObject *a;
        if (PyLong_Check(d)) {
            a = Py_NewRef(values[PyLong_AsSsize_t(d)]);
        } else if (PyLong_AsLong(PyTuple_GET_ITEM(d, 0)) == 0) {
            a = Py_NewRef(PyTuple_GET_ITEM(d, 1));
        } else {
            a = construct(PyTuple_GET_ITEM(d, 1), PyTuple_GET_ITEM(d, 2), PyTuple_GET_ITEM(d, 3),
                          values, status);
            if (!a) goto done;
        }
        argv[built] = a;
    }
    if (offsets != Py_None) return fill_new(cls, offsets, argv, n); /* steals argv */
    result = PyObject_Vectorcall(cls, argv, (size_t)n, NULL);
    if (!result) { /* a constructor refused: the Python road says why */
        PyErr_Clear();
        *status = DEFER;
    }
done:
    for (Py_ssize_t i = 0; i < built; i++) Py_DECREF(argv[i]);
    return result;
}

/* spec: (entries, cls, args, offsets); entries: tuple of (key, optional, default, kind), keys
 * ascending. ``first`` entries were read by the caller into values (key 0 of a message). */
static PyObject *read_map_entries(Reader *r, PyObject *spec, uint64_t count, Py_ssize_t first,
                                  uint64_t previous, PyObject **values, int *status) {
    PyObject *entries = PyTuple_GET_ITEM(spec, 0);
    Py_ssize_t n = PyTuple_GET_SIZE(entries), next = first;
    PyObject *result = NULL;
    if (n > MAX_ENTRIES || count > (uint64_t)n) {
        *status = DEFER;
        return NULL;
    }
    for (Py_ssize_t i = first; i < n; i++) values[i] = NULL;
    for (uint64_t c = (uint64_t)first; c < count; c++) {
        int major;
        uint64_t key;
        if (read_head(r, &major, &key) || major != 0 || (c > 0 && key <= previous)) goto defer;
        previous = key;
        for (;;) { /* entries skipped over must be optional: they stay at their default */
            if (next >= n) goto defer; /* an unknown key: extensions take the Python road */
            PyObject *entry = PyTuple_GET_ITEM(entries, next);
            uint64_t want = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 0));
            if (want == key) break;
            if (want > key || PyTuple_GET_ITEM(entry, 1) != Py_True) goto defer;
            next++;
        }
        values[next] = read_value(r, PyTuple_GET_ITEM(PyTuple_GET_ITEM(entries, next), 3), status);
        if (!values[next]) goto fail;
        next++;
    }
    for (Py_ssize_t i = first; i < n; i++) {
        if (values[i]) continue;
        PyObject *entry = PyTuple_GET_ITEM(entries, i);
        if (PyTuple_GET_ITEM(entry, 1) != Py_True) goto defer; /* a required field is missing */
        values[i] = Py_NewRef(PyTuple_GET_ITEM(entry, 2));
    }
    result = construct(PyTuple_GET_ITEM(spec, 1), PyTuple_GET_ITEM(spec, 2),
                       PyTuple_GET_ITEM(spec, 3), values, status);
    goto fail; /* release the values either way */
defer:
    *status = DEFER;
fail:
    for (Py_ssize_t i = first; i < n; i++) Py_XDECREF(values[i]);
    return result;
}

static PyObject *read_map(Reader *r, PyObject *spec, int *status) {
    int major;
    uint64_t count;
    PyObject *values[MAX_ENTRIES];
    if (read_head(r, &major, &count) || major != 5) {
        *status = DEFER;
        return NULL;
    }
    return read_map_entries(r, spec, count, 0, 0, values, status);
}

/* Returns a new reference, or NULL with *status DEFER or an exception set. */
static PyObject *read_value(Reader *r, PyObject *kind, int *status) {
    long code = PyLong_AsLong(PyTuple_GET_ITEM(kind, 0));
    int major;
    uint64_t arg;
    if (code == K_STRUCT) return read_map(r, PyTuple_GET_ITEM(kind, 2), status);
    if (code == K_CHECKED) {
        PyObject *v = read_value(r, PyTuple_GET_ITEM(kind, 3), status);
        if (!v) return NULL;
        PyObject *ok = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(kind, 1), v,
                                                    PyTuple_GET_ITEM(kind, 2), NULL);
        if (!ok) {
            PyErr_Clear();
            Py_DECREF(v);
            *status = DEFER;
            return NULL;
        }
        Py_DECREF(ok);
        return v;
    }
    if (read_head(r, &major, &arg)) goto defer;
    switch (code) {
    case K_UINT:
        if (major != 0) goto defer;
        return PyLong_FromUnsignedLongLong(arg);
    case K_TEXT: {
        if (major != 3 || arg > (uint64_t)PyLong_AsSsize_t(PyTuple_GET_ITEM(kind, 1)) ||
            (uint64_t)(r->end - r->p) < arg)
            goto defer;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p, (Py_ssize_t)arg, "strict");
        if (!s) {
            PyErr_Clear();
            goto defer;
        }
        r->p += arg;
        return s;
    }
    case K_CID: {
        if (major != 2 || arg != 34 || r->end - r->p < 34 || r->p[0] != 0x12 || r->p[1] != 32)
            goto defer;
        PyObject *raw = PyBytes_FromStringAndSize((const char *)r->p, 34);
        if (!raw) return NULL;
        r->p += 34;
        PyObject *offsets = PyTuple_GET_ITEM(kind, 3);
        return fill_new(PyTuple_GET_ITEM(kind, 1), offsets, &raw, 1);
    }
    case K_ENUM: {
        if (major != 0) goto defer;
        PyObject *key = PyLong_FromUnsignedLongLong(arg);
        if (!key) return NULL;
        PyObject *member = PyDict_GetItemWithError(PyTuple_GET_ITEM(kind, 1), key);
        Py_DECREF(key);
        if (!member) {
            if (PyErr_Occurred()) return NULL;
            goto defer;
        }
        return Py_NewRef(member);
    }
    case K_CONST: {
        uint64_t want;
        if (major != 0 || as_uint(PyTuple_GET_ITEM(kind, 1), &want) || arg != want) goto defer;
        return Py_NewRef(PyTuple_GET_ITEM(kind, 1));
    }
    case K_LIST: {
        /* an empty list is only ever written absent (the Python road says so) */
        if (major != 4 || arg == 0 || arg > (uint64_t)PyLong_AsSsize_t(PyTuple_GET_ITEM(kind, 1)))
            goto defer;
        PyObject *items = PyTuple_New((Py_ssize_t)arg);
        if (!items) return NULL;
        for (Py_ssize_t i = 0; i < (Py_ssize_t)arg; i++) {
            PyObject *item = read_value(r, PyTuple_GET_ITEM(kind, 2), status);
            if (!item) {
                Py_DECREF(items);
                return NULL;
            }
            PyTuple_SET_ITEM(items, i, item);
        }
        return items;
    }
    }
defer:
    *status = DEFER;
    return NULL;
}

/* read_message(specs: dict[int, spec], data: bytes) -> message | None */
static PyObject *speedups_read_message(PyObject *self, PyObject *args) {
    PyObject *specs;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "O!y*", &PyDict_Type, &specs, &view)) return NULL;
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *values[MAX_ENTRIES];
    PyObject *result = NULL, *type_code = NULL, *spec;
    int status = 0, major;
    uint64_t count, key, type;
    /* A message map starts with key 0, its type, which picks the spec. */
    if (read_head(&r, &major, &count) || major != 5 || count == 0) goto done;
    if (read_head(&r, &major, &key) || major != 0 || key != 0) goto done;
    if (read_head(&r, &major, &type) || major != 0) goto done;
    if (!(type_code = PyLong_FromUnsignedLongLong(type))) goto error;
    if (!(spec = PyDict_GetItemWithError(specs, type_code))) {
        if (PyErr_Occurred()) goto error;
        goto done;
    }
    values[0] = type_code; /* entry 0 is the type: the reference moves into values */
    type_code = NULL;
    result = read_map_entries(&r, spec, count, 1, 0, values, &status);
    Py_DECREF(values[0]);
    if (result && r.p != r.end) Py_CLEAR(result); /* trailing bytes: not one message */
    if (!result && status != DEFER && PyErr_Occurred()) goto error;
done:
    PyBuffer_Release(&view);
    Py_XDECREF(type_code);
    if (result) return result;
    Py_RETURN_NONE;
error:
    PyBuffer_Release(&view);
    Py_XDECREF(type_code);
    return NULL;
}

/* --- SlotInit: __init__ of a plain slotted attrs class -------------------------------------
 *
 * Stores its arguments into the instance's slots, binding them as the attrs-generated
 * __init__ it replaces does (positional then keyword, defaults for the rest) and raising
 * TypeError where that one would. Instances of any other type (a subclass) are handed to the
 * original __init__. With Py_TPFLAGS_METHOD_DESCRIPTOR, type.__call__ calls it with ``self``
 * first and no bound-method object in between, as it does a Python function. */

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls; /* borrowed: compared, never dereferenced */
    PyObject *names;   /* tuple of str */
    PyObject *defaults; /* tuple: per name a default, or ``required`` */
    PyObject *required;
    PyObject *original; /* the attrs-generated __init__ */
    PyObject *dict;     /* __wrapped__, __doc__ ... for introspection */
    Py_ssize_t n;
    Py_ssize_t offsets[MAX_ENTRIES];
    vectorcallfunc vectorcall;
} SlotInit;

static PyObject *slot_init_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames) {
    SlotInit *init = (SlotInit *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || Py_TYPE(args[0]) != init->cls)
        return PyObject_Vectorcall(init->original, args, nargsf, kwnames);
    PyObject *self = args[0];
    PyObject *values[MAX_ENTRIES] = {NULL};
    Py_ssize_t n = init->n, positional = nargs - 1;
    const char *name = ((PyTypeObject *)init->cls)->tp_name;
    if (positional > n) {
        PyErr_Format(PyExc_TypeError, "%s.__init__() takes %zd positional arguments but %zd were given",
                     name, n + 1, nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < positional; i++) values[i] = args[1 + i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t j = 0;
        for (; j < n; j++) {
            PyObject *candidate = PyTuple_GET_ITEM(init->names, j);
            if (candidate == key) break;
        }
        if (j == n) { /* not interned alike: compare the text */
            for (j = 0; j < n; j++) {
                int equal = PyUnicode_Compare(PyTuple_GET_ITEM(init->names, j), key);
                if (equal == -1 && PyErr_Occurred()) return NULL;
                if (equal == 0) break;
            }
        }
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "%s.__init__() got an unexpected keyword argument '%S'",
                         name, key);
            return NULL;
        }
        if (values[j]) {
            PyErr_Format(PyExc_TypeError, "%s.__init__() got multiple values for argument '%S'",
                         name, key);
            return NULL;
        }
        values[j] = args[nargs + k];
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (values[j]) continue;
        PyObject *fallback = PyTuple_GET_ITEM(init->defaults, j);
        if (fallback == init->required) {
            PyErr_Format(PyExc_TypeError, "%s.__init__() missing required argument: '%S'", name,
                         PyTuple_GET_ITEM(init->names, j));
            return NULL;
        }
        values[j] = fallback;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject **slot = &SLOT(self, init->offsets[j]);
        PyObject *old = *slot;
        *slot = Py_NewRef(values[j]);
        Py_XDECREF(old);
    }
    Py_RETURN_NONE;
}

static PyObject *slot_init_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static void slot_init_dealloc(SlotInit *init) {
    Py_XDECREF(init->names);
    Py_XDECREF(init->defaults);
    Py_XDECREF(init->required);
    Py_XDECREF(init->original);
    Py_XDECREF(init->dict);
    Py_TYPE(init)->tp_free((PyObject *)init);
}

/* SlotInit(cls, names, offsets, defaults, required, original) */
static PyObject *slot_init_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *cls, *names, *offsets, *defaults, *required, *original;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OO", &PyType_Type, &cls, &PyTuple_Type, &names,
                          &PyTuple_Type, &offsets, &PyTuple_Type, &defaults, &required, &original))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > MAX_ENTRIES || PyTuple_GET_SIZE(offsets) != n || PyTuple_GET_SIZE(defaults) != n) {
        PyErr_SetString(PyExc_ValueError, "names, offsets and defaults must match (at most 64)");
        return NULL;
    }
    SlotInit *init = (SlotInit *)type->tp_alloc(type, 0);
    if (!init) return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, j))) {
            Py_DECREF(init);
            PyErr_SetString(PyExc_TypeError, "names must be str");
            return NULL;
        }
        init->offsets[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, j));
        if (init->offsets[j] < (Py_ssize_t)sizeof(PyObject) ||
            init->offsets[j] + (Py_ssize_t)sizeof(PyObject *) > ((PyTypeObject *)cls)->tp_basicsize) {
            Py_DECREF(init);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "offset outside the object");
            return NULL;
        }
    }
    init->cls = (PyTypeObject *)cls;
    init->names = Py_NewRef(names);
    init->defaults = Py_NewRef(defaults);
    init->required = Py_NewRef(required);
    init->original = Py_NewRef(original);
    init->n = n;
    init->vectorcall = slot_init_call;
    return (PyObject *)init;
}

static PyTypeObject SlotInitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fleetwire.protocol._speedups.SlotInit",
    .tp_basicsize = sizeof(SlotInit),
    .tp_dealloc = (destructor)slot_init_dealloc,
    .tp_vectorcall_offset = offsetof(SlotInit, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "__init__ storing its arguments into slots (see accel.py).",
    .tp_descr_get = slot_init_get,
    .tp_dictoffset = offsetof(SlotInit, dict),
    .tp_new = slot_init_new,
};

/* construct_fast(cls, on): calling a SlotInit class, ``Cls(...)``, without type.__call__.
 *
 * In Python 3.11 a class defined in Python has no vectorcall of its own, so every
 * construction packs its arguments into a tuple (and a dict for keywords), runs
 * type.__call__, object.__new__, and looks __init__ up along the MRO before the SlotInit
 * binds a single argument: several times the work of the binding itself, on each of the
 * dozens of objects a message builds on every hop. With ``on`` this sets the class's
 * tp_vectorcall (a type object's own call slot, which PyObject_Vectorcall reads before
 * type.__call__) to class_vectorcall: allocate, then bind exactly as the SlotInit does.
 * Anything that would make that differ from type.__call__ — the class's own __init__ no
 * longer this SlotInit of this class, a __new__ of its own, an abstract class, a subclass
 * reaching here — takes type.__call__ with the same arguments. ``on`` false clears it.
 * This is the C API's own way (PyTypeObject.tp_vectorcall, Python 3.9 on: never inherited,
 * and it must behave as the metaclass's tp_call does, an overridden __new__ or __init__
 * included), not a reach into the interpreter's internals. */
static PyObject *init_name; /* "__init__", interned */

static PyObject *class_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    PyTypeObject *type = (PyTypeObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *init = type->tp_dict ? PyDict_GetItemWithError(type->tp_dict, init_name) : NULL;
    if (!init && PyErr_Occurred()) return NULL;
    if (init && Py_TYPE(init) == &SlotInitType && ((SlotInit *)init)->cls == type &&
        type->tp_new == PyBaseObject_Type.tp_new && !(type->tp_flags & Py_TPFLAGS_IS_ABSTRACT) &&
        nargs + nkw < MAX_ENTRIES) {
        PyObject *self = type->tp_alloc(type, 0);
        if (!self) return NULL;
        PyObject *stack[MAX_ENTRIES + 1];
        stack[0] = self;
        for (Py_ssize_t i = 0; i < nargs + nkw; i++) stack[i + 1] = args[i];
        Py_INCREF(init); /* held across the binding */
        PyObject *done = slot_init_call(init, stack, (size_t)(nargs + 1), kwnames);
        Py_DECREF(init);
        if (!done) {
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(done);
        return self;
    }
    /* type.__call__ itself, with the arguments as it takes them. */
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *made = NULL;
    if (!tuple) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (nkw) {
        if (!(kwargs = PyDict_New())) goto done;
        for (Py_ssize_t k = 0; k < nkw; k++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, k), args[nargs + k]) < 0)
                goto done;
    }
    made = PyType_Type.tp_call(callable, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return made;
}

static PyObject *speedups_construct_fast(PyObject *module, PyObject *args) {
    PyObject *cls;
    int on;
    if (!PyArg_ParseTuple(args, "O!p", &PyType_Type, &cls, &on)) return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    if (Py_TYPE(cls) != &PyType_Type || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "construct_fast: a class made by a class statement, "
                                         "whose metaclass is type");
        return NULL;
    }
    if (!init_name && !(init_name = PyUnicode_InternFromString("__init__"))) return NULL;
    type->tp_vectorcall = on ? class_vectorcall : NULL;
    Py_RETURN_NONE;
}

/* --- BPv7 bundles: the common shape in one pass (RFC 9171 §4.1, §4.3) -----------------------
 *
 * walk_bundle(spec, data) -> (Bundle, offsets) | None reads the bundles a fleet node nearly
 * always sees, exactly as protocol/bpv7/blocks.py's one-pass readers take them (and no more):
 *
 * - 0x9f, a primary block, canonical blocks, 0xff, and nothing after it;
 * - the primary block: 0x89 (9 items: CRC-32C, not a fragment), version 7, flags below 24
 *   without IS_FRAGMENT, CRC type 2, destination / source / report-to each either a
 *   2-element ipn EID [2, [node, service]] with node below 2**32 or dtn:none [1, 0],
 *   creation [time, sequence], lifetime, and a CRC-32C that matches;
 * - each canonical block: 0x86, type, number and flags below 24, CRC type 2, a definite byte
 *   string of data (shortest head, at most max_data bytes), a CRC-32C that matches;
 * - at most max_blocks canonical blocks and at least one.
 *
 * Every integer must be in shortest form (RFC 8949 §4.2.1). Anything else — another shape, a
 * wrong CRC, a truncation, a limit — returns None and the Python readers decide, errors
 * included, so this code never chooses an error, only "certainly the common shape". The
 * bundle-wide rules of check_bundle (bundle.py, RFC 9171 §4) are checked here too, for this
 * shape (rules_kept): a bundle that might break one is also left to the Python road, which
 * names the rule it breaks.
 *
 * spec = (Bundle, (primary, blocks offsets), PrimaryBlock, (9 offsets), CanonicalBlock,
 *         (5 offsets), CreationTimestamp, (2 offsets), IpnEid, (5 offsets: node, service,
 *         allocator, elements, _wire), DTN_NONE, CrcType.CRC32C, max_blocks, max_data)
 * The offsets are the classes' slot offsets (slot_offset), taken by bpv7/accel.py only for
 * plain slotted attrs classes whose slots are exactly those fields. */

/* Block numbers below 24 and unique: at most 23 canonical blocks take the common shape. */
#define WALK_MAX_BLOCKS 24

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <nmmintrin.h>
#define CRC32C_HAVE_SSE42 1
/* Set once at import (crc32c_init) if the CPU has the SSE 4.2 CRC32 instruction. */
static int crc32c_sse42 = 0;
#endif

static uint32_t crc32c_table[256];

static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
#ifdef CRC32C_HAVE_SSE42
    __builtin_cpu_init();
    crc32c_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

/* The CRC-32C register carried over p[0:n], one byte at a time through the table: the
 * reference, and the road of a CPU without SSE 4.2 (or another compiler / architecture). */
static uint32_t crc32c_update_table(uint32_t c, const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) c = crc32c_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c;
}

#if defined(CRC32C_HAVE_SSE42)
/* The CRC-32C register over p[0:n] with the SSE 4.2 instruction (same polynomial and bit
 * order as crc32c_table): eight bytes a step where the table loop takes one, which matters
 * on every hop (each received bundle's every block is checked, RFC 9171 §4.2.1). */
__attribute__((target("sse4.2"))) static uint32_t crc32c_update_hw(uint32_t c,
                                                                   const unsigned char *p,
                                                                   Py_ssize_t n) {
#if defined(__x86_64__)
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c64 = _mm_crc32_u64(c64, word);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
#endif
    while (n-- > 0) c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

/* The CRC-32C register carried over p[0:n]: the hardware instruction when the CPU has it,
 * else the table. Both give the same register (tests hold the walk and the writer, which
 * use this, against protocol/bpv7/crc.py). */
static uint32_t crc32c_update(uint32_t c, const unsigned char *p, Py_ssize_t n) {
#ifdef CRC32C_HAVE_SSE42
    if (crc32c_sse42) return crc32c_update_hw(c, p, n);
#endif
    return crc32c_update_table(c, p, n);
}

static const unsigned char crc32c_zero_field[4] = {0, 0, 0, 0};

/* CRC-32C (Castagnoli) of p[0:n] then four zero bytes (the zeroed CRC field, §4.2.1). */
static uint32_t crc32c_zeroed(const unsigned char *p, Py_ssize_t n) {
    uint32_t c = crc32c_update(0xFFFFFFFFu, p, n);
    return crc32c_update(c, crc32c_zero_field, 4) ^ 0xFFFFFFFFu;
}

/* crc32c_roads(data) -> (table, hardware or None): CRC-32C of ``data`` by each road this
 * file has, so a test can hold the one the walk and the writer take against the table and
 * the reference (protocol/bpv7/crc.py) on any CPU; None where there is no hardware road. */
static PyObject *speedups_crc32c_roads(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = (const unsigned char *)view.buf;
    uint32_t table = crc32c_update_table(0xFFFFFFFFu, p, view.len) ^ 0xFFFFFFFFu;
    PyObject *hardware = Py_NewRef(Py_None);
#ifdef CRC32C_HAVE_SSE42
    if (crc32c_sse42) {
        Py_DECREF(hardware);
        hardware = PyLong_FromUnsignedLong(crc32c_update_hw(0xFFFFFFFFu, p, view.len) ^ 0xFFFFFFFFu);
    }
#endif
    PyBuffer_Release(&view);
    if (!hardware) return NULL;
    return Py_BuildValue("(kN)", (unsigned long)table, hardware);
}

typedef struct {
    const unsigned char *base, *p, *end;
} Walk;

/* A definite head of ``major`` in shortest form (RFC 8949 §4.2.1); 0 on success, -1: not
 * the common shape. */
static int walk_head(Walk *w, int major, uint64_t *out) {
    if (w->p >= w->end || (*w->p >> 5) != major) return -1;
    unsigned char info = *w->p & 31;
    if (info < 24) {
        *out = info;
        w->p += 1;
        return 0;
    }
    if (info > 27) return -1;
    int width = 1 << (info - 24);
    if (w->end - w->p < 1 + width) return -1;
    uint64_t v = 0;
    for (int i = 1; i <= width; i++) v = (v << 8) | w->p[i];
    static const uint64_t shortest[4] = {24, 0x100, 0x10000, 0x100000000ULL};
    if (v < shortest[info - 24]) return -1;
    *out = v;
    w->p += 1 + width;
    return 0;
}

static int walk_uint(Walk *w, uint64_t *out) { return walk_head(w, 0, out); }

/* A new object of ``cls`` with its n slots set (references stolen; NULL values: failure). */
static PyObject *filled(PyObject *cls, PyObject *offsets, PyObject **values, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!values[i]) {
            for (Py_ssize_t j = 0; j < n; j++) Py_XDECREF(values[j]);
            return NULL;
        }
    }
    return fill_new(cls, offsets, values, n);
}

/* The ipn EIDs the walk built last, by their CBOR: a node reads the same few (its
 * neighbours', its cell's) on every bundle, and an IpnEid is frozen, so the one built for
 * those bytes before is the same value (node, service, allocator 0, elements 2, the same
 * wire bytes). Direct-mapped, EID_CACHE_SIZE entries: a bounded number of references,
 * whatever EIDs hostile bundles carry; an entry is only replaced.
 *
 * Sized for a process that runs a whole simulated fleet, not one node: one process walks the
 * bundles of every agent it holds, so the EIDs in turn are the fleet's, not a node's few. At
 * 64 entries a 10,000-node fleet missed nearly always, and every miss built an IpnEid, its
 * ints, its wire bytes and its text anew, which a relay's and a destination's tombstones
 * then kept for a day. 16,384 entries (768 KiB here; at most that many EIDs and texts held)
 * took everything beside the signatures 3% lower at 10,000 nodes. */
#define EID_CACHE_SIZE 16384
#define EID_CACHE_WIRE 24
typedef struct {
    Py_ssize_t len;
    unsigned char wire[EID_CACHE_WIRE];
    PyObject *eid;
    PyObject *text; /* its text (str(eid)), made the first time walk_bundle_facts asks */
} EidCacheEntry;
static EidCacheEntry eid_cache[EID_CACHE_SIZE];

static size_t eid_cache_slot(const unsigned char *p, Py_ssize_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h % EID_CACHE_SIZE;
}

/* Where an EID lies in the bundle and what it names: what walk_bundle_facts reads back. */
typedef struct {
    const unsigned char *wire; /* its CBOR in the bundle (the EID's ``wire``) */
    Py_ssize_t len;
    int is_ipn; /* 0: dtn:none */
    uint64_t node, service;
} EidFacts;

/* An EID in the common forms; *status DEFER when not one (NULL returned either way on no). */
static PyObject *walk_eid(Walk *w, PyObject *spec, EidFacts *where, int *is_null, int *status) {
    const unsigned char *start = w->p;
    if (w->end - w->p < 3 || w->p[0] != 0x82) goto defer;
    where->wire = start;
    if (w->p[1] == 0x01 && w->p[2] == 0x00) {
        w->p += 3;
        *is_null = 1;
        where->len = 3;
        where->is_ipn = 0;
        return Py_NewRef(PyTuple_GET_ITEM(spec, 10));
    }
    if (w->p[1] != 0x02 || w->p[2] != 0x82) goto defer;
    w->p += 3;
    uint64_t node, service;
    if (walk_uint(w, &node) || walk_uint(w, &service) || node > 0xFFFFFFFFu) goto defer;
    *is_null = node == 0 && service == 0; /* ipn:0.0, the null endpoint (RFC 9758) */
    PyObject *cls = PyTuple_GET_ITEM(spec, 8);
    Py_ssize_t len = w->p - start;
    where->len = len;
    where->is_ipn = 1;
    where->node = node;
    where->service = service;
    EidCacheEntry *entry = NULL;
    if (len <= EID_CACHE_WIRE) {
        entry = &eid_cache[eid_cache_slot(start, len)];
        if (entry->eid && entry->len == len && memcmp(entry->wire, start, (size_t)len) == 0 &&
            (PyObject *)Py_TYPE(entry->eid) == cls)
            return Py_NewRef(entry->eid);
    }
    PyObject *values[5] = {
        PyLong_FromUnsignedLongLong(node), PyLong_FromUnsignedLongLong(service),
        PyLong_FromLong(0), PyLong_FromLong(2),
        PyBytes_FromStringAndSize((const char *)start, len),
    };
    PyObject *eid = filled(cls, PyTuple_GET_ITEM(spec, 9), values, 5);
    if (eid && entry) {
        Py_XSETREF(entry->eid, Py_NewRef(eid));
        Py_CLEAR(entry->text); /* another EID's text, if any */
        entry->len = len;
        memcpy(entry->wire, start, (size_t)len);
    }
    return eid;
defer:
    *status = DEFER;
    return NULL;
}

static int check_crc(Walk *w, const unsigned char *block_start) {
    /* at w->p: 0x44 and four bytes, the CRC-32C of the block with that field zeroed */
    if (w->end - w->p < 5 || w->p[0] != 0x44) return -1;
    uint32_t want = ((uint32_t)w->p[1] << 24) | ((uint32_t)w->p[2] << 16) |
                    ((uint32_t)w->p[3] << 8) | w->p[4];
    if (crc32c_zeroed(block_start, w->p + 1 - block_start) != want) return -1;
    w->p += 5;
    return 0;
}

/* What the bundle-wide rules need of the primary block, and what walk_bundle_facts reads of
 * it: the EIDs' places, the creation timestamp's items (time, sequence) as written. */
typedef struct {
    unsigned char flags;
    int anonymous;
    uint64_t time, lifetime;
    EidFacts destination, source;
    const unsigned char *creation_items, *creation_end;
} PrimaryFacts;

static PyObject *walk_primary(Walk *w, PyObject *spec, PrimaryFacts *facts, int *status) {
    const unsigned char *start = w->p;
    PyObject *eids[3] = {NULL, NULL, NULL};
    if (w->end - w->p < 4 || w->p[0] != 0x89 || w->p[1] != 7 || w->p[3] != 2) goto defer;
    unsigned char flags = w->p[2];
    if (flags >= 24 || (flags & 1)) goto defer;
    w->p += 4;
    int is_null[3] = {0, 0, 0};
    EidFacts report_to;
    EidFacts *where[3] = {&facts->destination, &facts->source, &report_to};
    for (int i = 0; i < 3; i++)
        if (!(eids[i] = walk_eid(w, spec, where[i], &is_null[i], status))) goto fail;
    facts->flags = flags;
    facts->anonymous = is_null[1];
    uint64_t time, sequence, lifetime;
    if (w->p >= w->end || *w->p != 0x82) goto defer;
    w->p += 1;
    facts->creation_items = w->p;
    if (walk_uint(w, &time) || walk_uint(w, &sequence)) goto defer;
    facts->creation_end = w->p;
    if (walk_uint(w, &lifetime)) goto defer;
    if (check_crc(w, start)) goto defer;
    facts->time = time;
    facts->lifetime = lifetime;
    PyObject *creation_values[2] = {PyLong_FromUnsignedLongLong(time),
                                    PyLong_FromUnsignedLongLong(sequence)};
    PyObject *creation = filled(PyTuple_GET_ITEM(spec, 6), PyTuple_GET_ITEM(spec, 7),
                                creation_values, 2);
    PyObject *values[9] = {
        eids[0], eids[1], eids[2], creation, PyLong_FromUnsignedLongLong(lifetime),
        PyLong_FromLong(flags), Py_NewRef(PyTuple_GET_ITEM(spec, 11)), Py_NewRef(Py_None),
        Py_NewRef(Py_None),
    };
    return filled(PyTuple_GET_ITEM(spec, 2), PyTuple_GET_ITEM(spec, 3), values, 9);
defer:
    *status = DEFER;
fail:
    for (int i = 0; i < 3; i++) Py_XDECREF(eids[i]);
    return NULL;
}

/* What the bundle-wide rules need of a canonical block. */
typedef struct {
    unsigned char type, number, flags;
    const unsigned char *data;
    uint64_t length;
} BlockFacts;

static PyObject *walk_canonical(Walk *w, PyObject *spec, uint64_t max_data, BlockFacts *facts,
                                int *status) {
    const unsigned char *start = w->p, *p = w->p;
    if (w->end - p < 6 || p[0] != 0x86 || p[4] != 2) goto defer;
    unsigned char type = p[1], number = p[2], flags = p[3];
    if (type >= 24 || number >= 24 || flags >= 24) goto defer;
    w->p += 5;
    uint64_t length;
    if (walk_head(w, 2, &length)) goto defer;
    if (length > max_data || (uint64_t)(w->end - w->p) < length) goto defer;
    const unsigned char *begin = w->p;
    w->p += length;
    if (check_crc(w, start)) goto defer;
    facts->type = type;
    facts->number = number;
    facts->flags = flags;
    facts->data = begin;
    facts->length = length;
    PyObject *values[5] = {
        PyLong_FromLong(type), PyLong_FromLong(number),
        PyBytes_FromStringAndSize((const char *)begin, (Py_ssize_t)length), PyLong_FromLong(flags),
        Py_NewRef(PyTuple_GET_ITEM(spec, 11)),
    };
    return filled(PyTuple_GET_ITEM(spec, 4), PyTuple_GET_ITEM(spec, 5), values, 5);
defer:
    *status = DEFER;
    return NULL;
}

/* Whether an extension block's data is certainly valid (§4.4.1-§4.4.3), in the forms the
 * walk takes: a Previous Node EID in the common forms, a Bundle Age, a Hop Count with its
 * limit in 1..255; nothing after them. Anything else: the Python decoders decide. */
static int extension_fine(const BlockFacts *b) {
    Walk w = {b->data, b->data, b->data + b->length};
    uint64_t a, c;
    if (b->type == 6) {
        if (w.end - w.p == 3 && w.p[0] == 0x82 && w.p[1] == 0x01 && w.p[2] == 0x00) return 1;
        if (w.end - w.p < 3 || w.p[0] != 0x82 || w.p[1] != 0x02 || w.p[2] != 0x82) return 0;
        w.p += 3;
        if (walk_uint(&w, &a) || walk_uint(&w, &c) || a > 0xFFFFFFFFu) return 0;
    } else if (b->type == 7) {
        if (walk_uint(&w, &a)) return 0;
    } else {
        if (walk_head(&w, 4, &a) || a != 2 || walk_uint(&w, &a) || walk_uint(&w, &c)) return 0;
        if (a < 1 || a > 255) return 0;
    }
    return w.p == w.end;
}

/* check_bundle's rules (bundle.py, RFC 9171 §4) on a walked bundle: 1 if it certainly keeps
 * every one, 0 if it may break one (the Python road then names the rule). Flags below 24
 * rule out fragments and status report requests; the primary block has a CRC. */
static int rules_kept(const PrimaryFacts *primary, const BlockFacts *blocks, Py_ssize_t n) {
    uint32_t numbers = 0;
    int singles = 0, age = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const BlockFacts *b = &blocks[i];
        if (b->number == 0 || (numbers & (1u << b->number))) return 0;
        numbers |= 1u << b->number;
        if (b->type == 1) {
            if (i != n - 1 || b->number != 1) return 0;
        } else if (b->type == 0) {
            return 0;
        } else if (b->type == 6 || b->type == 7 || b->type == 10) {
            if (singles & (1 << b->type)) return 0;
            singles |= 1 << b->type;
            age |= b->type == 7;
            if (!extension_fine(b)) return 0;
        }
        /* report-if-unprocessable on an admin record's or an anonymous bundle's blocks */
        if ((b->flags & 0x02) && ((primary->flags & 0x02) || primary->anonymous)) return 0;
    }
    if (n == 0 || blocks[n - 1].type != 1) return 0;
    if (primary->time == 0 && !age) return 0;
    if (primary->anonymous && !(primary->flags & 0x04)) return 0;
    return 1;
}

/* The walk itself: (Bundle, offsets), a new None (not the common shape: the Python road),
 * or NULL with an error set. primary_facts and facts[0:*n] describe the bundle walked (the
 * facts point into ``data``). */
static PyObject *walk_whole(PyObject *spec, PyObject *data, PrimaryFacts *primary_facts,
                            BlockFacts *facts, Py_ssize_t *walked) {
    if (PyTuple_GET_SIZE(spec) != 14) {
        PyErr_SetString(PyExc_ValueError, "walk_bundle: a spec of 14 items");
        return NULL;
    }
    Py_ssize_t max_blocks = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 12));
    Py_ssize_t max_data = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 13));
    if ((max_blocks == -1 || max_data == -1) && PyErr_Occurred()) return NULL;
    if (max_blocks > WALK_MAX_BLOCKS) max_blocks = WALK_MAX_BLOCKS;
    const unsigned char *base = (const unsigned char *)PyBytes_AS_STRING(data);
    Walk w = {base, base, base + PyBytes_GET_SIZE(data)};
    int status = 0;
    /* The blocks and offsets in C arrays, made into tuples once the walk is through (no
     * list to grow and copy): at most WALK_MAX_BLOCKS blocks, two offsets more. */
    PyObject *primary = NULL, *blocks[WALK_MAX_BLOCKS];
    Py_ssize_t offsets[WALK_MAX_BLOCKS + 2], n = 0;
    if (w.p >= w.end || *w.p != 0x9F) Py_RETURN_NONE;
    w.p += 1;
    if (!(primary = walk_primary(&w, spec, primary_facts, &status))) goto out;
    offsets[0] = 1;
    for (;;) {
        offsets[n + 1] = w.p - base;
        if (w.p >= w.end) {
            status = DEFER;
            goto out;
        }
        if (*w.p == 0xFF) break;
        if (n >= max_blocks) {
            status = DEFER;
            goto out;
        }
        if (!(blocks[n] = walk_canonical(&w, spec, (uint64_t)max_data, &facts[n], &status)))
            goto out;
        n++;
    }
    w.p += 1;
    if (w.p != w.end || !rules_kept(primary_facts, facts, n)) {
        status = DEFER;
        goto out;
    }
    PyObject *block_tuple = PyTuple_New(n), *offset_tuple = PyTuple_New(n + 2);
    if (!block_tuple || !offset_tuple) {
        Py_XDECREF(block_tuple);
        Py_XDECREF(offset_tuple);
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(block_tuple, i, blocks[i]); /* stolen */
    *walked = n;
    n = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(offset_tuple); i++) {
        PyObject *offset = PyLong_FromSsize_t(offsets[i]);
        if (!offset) {
            Py_DECREF(block_tuple);
            Py_DECREF(offset_tuple);
            goto out;
        }
        PyTuple_SET_ITEM(offset_tuple, i, offset);
    }
    PyObject *values[2] = {primary, block_tuple};
    primary = NULL;
    PyObject *bundle = filled(PyTuple_GET_ITEM(spec, 0), PyTuple_GET_ITEM(spec, 1), values, 2);
    if (!bundle) {
        Py_DECREF(offset_tuple);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (!result) {
        Py_DECREF(bundle);
        Py_DECREF(offset_tuple);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, bundle);
    PyTuple_SET_ITEM(result, 1, offset_tuple);
    return result;
out:
    Py_XDECREF(primary);
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(blocks[i]);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *speedups_walk_bundle(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "walk_bundle(spec: tuple, data: bytes)");
        return NULL;
    }
    PrimaryFacts primary_facts;
    BlockFacts facts[WALK_MAX_BLOCKS];
    Py_ssize_t n = 0;
    return walk_whole(args[0], args[1], &primary_facts, facts, &n);
}

#include "_walk_facts.h"

static PyMethodDef methods[] = {
    {"write", speedups_write, METH_VARARGS,
     "write(spec, message) -> bytes | None: deterministic CBOR, or None for the Python road."},
    {"write_or", speedups_write_or, METH_VARARGS,
     "write_or(spec, fallback, message) -> bytes: write(), or fallback(message) where the C "
     "code defers."},
    {"construct_fast", speedups_construct_fast, METH_VARARGS,
     "construct_fast(cls, on): calling cls binds through its SlotInit without type.__call__ "
     "(on), or as before (off)."},
    {"slot_offset", speedups_slot_offset, METH_O,
     "slot_offset(member_descriptor) -> int: the offset of a __slots__ member."},
    {"read_message", speedups_read_message, METH_VARARGS,
     "read_message(specs, data) -> message | None: the message if data is valid and "
     "deterministic in the common form, else None for the Python road."},
    {"crc32c_roads", speedups_crc32c_roads, METH_O,
     "crc32c_roads(data) -> (table, hardware | None): CRC-32C of data by the table and by the "
     "SSE 4.2 instruction (None without it), for tests."},
    {"walk_bundle", (PyCFunction)(void (*)(void))speedups_walk_bundle, METH_FASTCALL,
     "walk_bundle(spec, data) -> (Bundle, offsets) | None: the decoded bundle and its block "
     "offsets if data is a bundle of the common shape with good CRCs, else None for the Python "
     "road (see protocol/bpv7/accel.py)."},
    {"walk_bundle_facts", (PyCFunction)(void (*)(void))speedups_walk_bundle_facts, METH_FASTCALL,
     "walk_bundle_facts(spec, data, payload_tag, this_node) -> (bundle, offsets, bundle_key, "
     "content_key, source_text, destination_text, local, expires_at, hop_over, exclude) | None: "
     "walk_bundle and the facts each hop reads of the bundle (see protocol/_walk_facts.h)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Optional C accelerator for the message codec and the BPv7 bundle walk (see "
    "protocol/messages/accel.py and protocol/bpv7/accel.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

static int add_send_path(PyObject *m);
static int add_relay_path(PyObject *m);
int add_content_id(PyObject *m); /* protocol/_content_id.c */
int add_event_queue(PyObject *m); /* protocol/_event_queue.c */
int add_arenas(PyObject *m);      /* protocol/_arenas.c */
int add_agent_store(PyObject *m); /* protocol/_agent_store.c */

PyMODINIT_FUNC PyInit__speedups(void) {
    crc32c_init();
    if (PyType_Ready(&SlotInitType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "SlotInit", (PyObject *)&SlotInitType) < 0 || add_send_path(m) < 0 ||
        add_relay_path(m) < 0 || add_content_id(m) < 0 || add_event_queue(m) < 0 ||
        add_arenas(m) < 0 || add_agent_store(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* --- send path ----------------------------------------------------------------------------
 *
 * message_bundle_bytes(flags, destination, source, report_to, time, sequence, lifetime,
 *                      hop_limit, payload) -> (bytes, (start, hops, payload, end))
 *
 * The whole bundle a node makes for one message (protocol/agent/bundling.py, RFC 9171 §4.1),
 * written in one pass into one bytes object: 0x9f, the primary block (§4.3.1: 9 items,
 * version 7, CRC type 2, CRC-32C), a Hop Count block (§4.4.3: type 10, number 2, no flags,
 * CRC-32C, data [hop_limit, 0]), the payload block (§4.3.2: type 1, number 1, no flags,
 * CRC-32C) and 0xff — byte for byte what blocks.py's encoders write for that bundle. The
 * offsets are where each block starts and where the last one ends, as
 * decode_bundle_offsets() gives them.
 *
 * destination, source and report_to are EIDs' CBOR (Eid.wire), copied as given after a check
 * of their structure (send_eid; at most SEND_MAX_EID bytes). Every other input
 * is bounded here and refused with a typed error (TypeError for a wrong type, ValueError for
 * a value out of range or a bundle RFC 9171 §4 does not allow), so the bytes written are
 * always a valid bundle: the agent's Python wrapper then runs the reference encoder, which
 * names the rule. Helpers are prefixed send_ (this file's other names are taken). */

#define SEND_MAX_EID 1024
#define SEND_MAX_PAYLOAD ((Py_ssize_t)0xFFFFFFFF)
#define SEND_IS_FRAGMENT 0x000001u
#define SEND_ADMIN_RECORD 0x000002u
#define SEND_MUST_NOT_FRAGMENT 0x000004u
#define SEND_REPORT_REQUESTS (0x004000u | 0x010000u | 0x020000u | 0x040000u)

/* CRC-32C (Castagnoli, RFC 9171 §4.2.2) of p[0:n]. */
static uint32_t send_crc32c(const unsigned char *p, Py_ssize_t n) {
    return crc32c_update(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

/* Bytes of the shortest CBOR head for ``arg`` (RFC 8949 §4.2.1). */
static Py_ssize_t send_head_len(uint64_t arg) {
    return arg < 24 ? 1 : arg <= 0xFF ? 2 : arg <= 0xFFFF ? 3 : arg <= 0xFFFFFFFFu ? 5 : 9;
}

/* The shortest head of ``major`` for ``arg`` at ``p``; returns the position after it. */
static unsigned char *send_head(unsigned char *p, int major, uint64_t arg) {
    Py_ssize_t n = send_head_len(arg);
    unsigned char m = (unsigned char)(major << 5);
    if (n == 1) {
        *p++ = m | (unsigned char)arg;
        return p;
    }
    *p++ = m | (n == 2 ? 24 : n == 3 ? 25 : n == 5 ? 26 : 27);
    for (Py_ssize_t i = n - 2; i >= 0; i--) *p++ = (unsigned char)(arg >> (8 * i));
    return p;
}

/* A CRC-32C field (0x44 and four bytes, §4.2.1) closing the block that starts at ``start``:
 * the CRC covers the block with the field's value zeroed. Returns the position after it. */
static unsigned char *send_crc_field(unsigned char *start, unsigned char *p) {
    *p++ = 0x44;
    memset(p, 0, 4);
    uint32_t crc = send_crc32c(start, (p + 4) - start);
    p[0] = (unsigned char)(crc >> 24);
    p[1] = (unsigned char)(crc >> 16);
    p[2] = (unsigned char)(crc >> 8);
    p[3] = (unsigned char)crc;
    return p + 4;
}

/* ``value`` as an unsigned 64-bit integer (a CBOR uint); -1 with TypeError / ValueError. */
static int send_uint(PyObject *value, const char *what, uint64_t *out) {
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(value)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s %R is not in 0..2**64-1", what, value);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* A shortest-form head of ``major`` at p (RFC 8949 §4.2.1), before ``end``: the position
 * after it, or NULL. */
static const unsigned char *send_read_head(const unsigned char *p, const unsigned char *end,
                                           int major, uint64_t *arg) {
    if (p >= end || (*p >> 5) != major) return NULL;
    unsigned char info = *p++ & 31;
    if (info < 24) {
        *arg = info;
        return p;
    }
    if (info > 27) return NULL;
    Py_ssize_t width = (Py_ssize_t)1 << (info - 24);
    if (end - p < width) return NULL;
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < width; i++) v = (v << 8) | *p++;
    if (send_head_len(v) != 1 + width) return NULL; /* not the shortest form */
    *arg = v;
    return p;
}

/* An EID's CBOR (RFC 9171 §4.2.5.1), at most SEND_MAX_EID bytes, one whole item: dtn:none
 * [1, 0], a dtn EID [1, text], an ipn EID [2, [fqnn, service]] or [2, [allocator, node,
 * service]] (RFC 9758: allocator and node below 2**32). The dtn name's characters are the
 * Eid classes' to check; the structure is checked here, so the bundle written decodes. */
static int send_eid(PyObject *value, const char *what, const char **data, Py_ssize_t *len) {
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be an EID's CBOR bytes, not %.100s", what,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    *data = PyBytes_AS_STRING(value);
    *len = PyBytes_GET_SIZE(value);
    const unsigned char *p = (const unsigned char *)*data, *end = p + *len;
    int fine = 0;
    uint64_t a, b, c;
    if (*len >= 3 && *len <= SEND_MAX_EID && p[0] == 0x82) {
        if (p[1] == 0x01) {
            fine = (*len == 3 && p[2] == 0x00) ||
                   ((p = send_read_head(p + 2, end, 3, &a)) && a >= 1 && (uint64_t)(end - p) == a);
        } else if (p[1] == 0x02 && p[2] == 0x82) {
            fine = (p = send_read_head(p + 3, end, 0, &a)) && (p = send_read_head(p, end, 0, &b)) &&
                   p == end;
        } else if (p[1] == 0x02 && p[2] == 0x83) {
            fine = (p = send_read_head(p + 3, end, 0, &a)) && (p = send_read_head(p, end, 0, &b)) &&
                   (p = send_read_head(p, end, 0, &c)) && p == end && a <= 0xFFFFFFFFu &&
                   b <= 0xFFFFFFFFu;
        }
    }
    if (!fine) {
        PyErr_Format(PyExc_ValueError, "%s is not the CBOR of a dtn or ipn EID of at most %d bytes",
                     what, SEND_MAX_EID);
        return -1;
    }
    return 0;
}

/* dtn:none [1, 0] or its ipn form ipn:0.0 ([2, [0, 0]] or [2, [0, 0, 0]], RFC 9758): the
 * null endpoint, whose bundles are anonymous (§4.2.3). */
static int send_eid_is_null(const char *eid, Py_ssize_t len) {
    return (len == 3 && memcmp(eid, "\x82\x01\x00", 3) == 0) ||
           (len == 5 && memcmp(eid, "\x82\x02\x82\x00\x00", 5) == 0) ||
           (len == 6 && memcmp(eid, "\x82\x02\x83\x00\x00\x00", 6) == 0);
}

static PyObject *speedups_message_bundle_bytes(PyObject *self, PyObject *const *args,
                                               Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "message_bundle_bytes() takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    uint64_t flags, time, sequence, lifetime, hop_limit;
    const char *eid[3];
    Py_ssize_t eid_len[3];
    static const char *const eid_names[3] = {"destination", "source", "report_to"};
    if (send_uint(args[0], "bundle processing flags", &flags) < 0) return NULL;
    for (int i = 0; i < 3; i++)
        if (send_eid(args[1 + i], eid_names[i], &eid[i], &eid_len[i]) < 0) return NULL;
    if (send_uint(args[4], "creation time", &time) < 0 ||
        send_uint(args[5], "sequence number", &sequence) < 0 ||
        send_uint(args[6], "lifetime", &lifetime) < 0 ||
        send_uint(args[7], "hop limit", &hop_limit) < 0)
        return NULL;
    PyObject *payload = args[8];
    if (!PyBytes_Check(payload)) {
        PyErr_Format(PyExc_TypeError, "payload must be bytes, not %.100s", Py_TYPE(payload)->tp_name);
        return NULL;
    }
    Py_ssize_t payload_len = PyBytes_GET_SIZE(payload);
    /* The bundle-wide rules of RFC 9171 §4 this shape could break (bundle.py check_bundle). */
    const char *refused = NULL;
    int anonymous = send_eid_is_null(eid[1], eid_len[1]);
    if (hop_limit < 1 || hop_limit > 255)
        refused = "hop limit not in 1..255 (RFC 9171 §4.4.3)";
    else if (payload_len > SEND_MAX_PAYLOAD)
        refused = "payload longer than 2**32-1 bytes";
    else if (flags & SEND_IS_FRAGMENT)
        refused = "a fragment needs fragment offset and total ADU length (RFC 9171 §4.3.1)";
    else if (time == 0)
        refused = "creation time 0 without a Bundle Age block (RFC 9171 §4.4.2)";
    else if ((flags & SEND_ADMIN_RECORD) && (flags & SEND_REPORT_REQUESTS))
        refused = "administrative record requesting status reports (RFC 9171 §4.2.3)";
    else if (anonymous && ((flags & SEND_REPORT_REQUESTS) || !(flags & SEND_MUST_NOT_FRAGMENT)))
        refused = "null source needs must-not-fragment and no report requests (RFC 9171 §4.2.3)";
    if (refused) {
        PyErr_SetString(PyExc_ValueError, refused);
        return NULL;
    }
    Py_ssize_t primary_len = 1 + 1 + send_head_len(flags) + 1 + eid_len[0] + eid_len[1] + eid_len[2] +
                             1 + send_head_len(time) + send_head_len(sequence) +
                             send_head_len(lifetime) + 5;
    Py_ssize_t hop_data = 1 + send_head_len(hop_limit) + 1;
    Py_ssize_t hops_len = 5 + 1 + hop_data + 5;
    Py_ssize_t payload_block_len = 5 + send_head_len((uint64_t)payload_len) + payload_len + 5;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 1 + primary_len + hops_len + payload_block_len + 1);
    if (!out) return NULL;
    unsigned char *base = (unsigned char *)PyBytes_AS_STRING(out), *p = base, *start;
    *p++ = 0x9f;
    start = p; /* primary block, §4.3.1 */
    *p++ = 0x89;
    *p++ = 0x07;
    p = send_head(p, 0, flags);
    *p++ = 0x02;
    for (int i = 0; i < 3; i++) {
        memcpy(p, eid[i], (size_t)eid_len[i]);
        p += eid_len[i];
    }
    *p++ = 0x82;
    p = send_head(p, 0, time);
    p = send_head(p, 0, sequence);
    p = send_head(p, 0, lifetime);
    p = send_crc_field(start, p);
    start = p; /* Hop Count block, §4.4.3 */
    memcpy(p, "\x86\x0a\x02\x00\x02", 5);
    p += 5;
    p = send_head(p, 2, (uint64_t)hop_data);
    *p++ = 0x82;
    p = send_head(p, 0, hop_limit);
    *p++ = 0x00;
    p = send_crc_field(start, p);
    start = p; /* payload block, §4.3.2 */
    memcpy(p, "\x86\x01\x01\x00\x02", 5);
    p += 5;
    p = send_head(p, 2, (uint64_t)payload_len);
    memcpy(p, PyBytes_AS_STRING(payload), (size_t)payload_len);
    p += payload_len;
    p = send_crc_field(start, p);
    *p++ = 0xff;
    Py_ssize_t hops_at = 1 + primary_len, payload_at = hops_at + hops_len;
    if (p - base != payload_at + payload_block_len + 1) { /* the sizes above and the writes agree */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "message_bundle_bytes: length mismatch");
        return NULL;
    }
    return Py_BuildValue("N(nnnn)", out, (Py_ssize_t)1, hops_at, payload_at,
                         payload_at + payload_block_len);
}

static PyMethodDef send_path_methods[] = {
    {"message_bundle_bytes", (PyCFunction)(void (*)(void))speedups_message_bundle_bytes,
     METH_FASTCALL,
     "message_bundle_bytes(flags, destination, source, report_to, time, sequence, lifetime, "
     "hop_limit, payload) -> (bytes, offsets): a message bundle (primary, Hop Count, payload "
     "blocks, CRC-32C) encoded as protocol/bpv7 encodes it; TypeError / ValueError for inputs "
     "out of range or a bundle RFC 9171 §4 does not allow."},
    {NULL, NULL, 0, NULL},
};

static int add_send_path(PyObject *m) { return PyModule_AddFunctions(m, send_path_methods); }

/* --- relay path ---------------------------------------------------------------------------
 *
 * relay_forward_bytes(data, offsets, this_node) -> bytes | None
 *
 * What a relay transmits for a bundle it received (protocol/agent/bundling.py forward_bytes,
 * RFC 9171 §5.4): the same bytes, but the Hop Count block (§4.4.3) counts one hop more and a
 * Previous Node block (§4.4.1) names ipn:this_node.0. ``data`` is a bundle as the C walk or
 * decode_bundle_offsets() read it and ``offsets`` where its blocks start. Only the two shapes
 * nearly every relayed bundle has are written here: [primary, Hop Count, payload] (the new
 * Previous Node block goes before the payload, numbered one above the highest) and
 * [primary, Hop Count, Previous Node, payload] (both rewritten in place). Every other block
 * is copied as received: its CRC covers it alone (§4.2.1).
 *
 * The rewritten blocks are written as blocks.py writes them (no flags, CRC-32C, shortest
 * heads). Anything else — another shape, a head not in shortest form, a hop count at its
 * limit, a limit outside 1..255, a node number past 32 bits, offsets that do not fit ``data``
 * — gives None, and the Python road decides (errors included): C never chooses an error.
 * Helpers are prefixed relay_. */

/* The canonical block at p[0:end - p] (§4.3.2): its type, number and, if ``data_at`` is not
 * NULL, where its block-specific data starts and how long it is. 0 if it is not a 5- or
 * 6-item block with shortest heads that ends exactly at ``end``. */
static int relay_block(const unsigned char *p, const unsigned char *end, uint64_t *type,
                       uint64_t *number, const unsigned char **data_at, uint64_t *data_len) {
    if (p >= end || (*p != 0x85 && *p != 0x86)) return 0;
    int with_crc = *p++ == 0x86;
    uint64_t flags, crc_type, len;
    if (!(p = send_read_head(p, end, 0, type))) return 0;
    if (!(p = send_read_head(p, end, 0, number))) return 0;
    if (!(p = send_read_head(p, end, 0, &flags))) return 0;
    if (!(p = send_read_head(p, end, 0, &crc_type))) return 0;
    if (!(p = send_read_head(p, end, 2, &len)) || (uint64_t)(end - p) < len) return 0;
    if (data_at) *data_at = p;
    if (data_len) *data_len = len;
    p += len;
    if (with_crc != (crc_type != 0)) return 0;
    if (with_crc) {
        uint64_t crc_len;
        if (!(p = send_read_head(p, end, 2, &crc_len)) || (uint64_t)(end - p) < crc_len) return 0;
        p += crc_len;
    }
    return p == end;
}

static PyObject *relay_forward_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2]))
        Py_RETURN_NONE;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), n = PyTuple_GET_SIZE(args[1]);
    if (n != 4 && n != 5) Py_RETURN_NONE;
    Py_ssize_t at[5];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(args[1], i);
        if (!PyLong_CheckExact(item)) Py_RETURN_NONE;
        at[i] = PyLong_AsSsize_t(item);
        if (at[i] == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (at[i] < 1 || at[i] > size || (i && at[i] <= at[i - 1])) Py_RETURN_NONE;
    }
    /* an indefinite array: 0x9f, the blocks, then the break ending the bytes (§4.1) */
    if (data[0] != 0x9f || at[0] != 1 || at[n - 1] != size - 1 || data[size - 1] != 0xff)
        Py_RETURN_NONE;
    unsigned long long node = PyLong_AsUnsignedLongLong(args[2]); /* OverflowError if < 0 */
    if (node == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (node > 0xFFFFFFFFull) Py_RETURN_NONE; /* past 32 bits: IpnEid refuses it */
    uint64_t type, hop_number, previous_number, payload_number, data_len, limit, count;
    const unsigned char *hop_data;
    if (!relay_block(data + at[1], data + at[2], &type, &hop_number, &hop_data, &data_len) ||
        type != 10)
        Py_RETURN_NONE;
    const unsigned char *p = hop_data, *hop_end = hop_data + data_len;
    if (p >= hop_end || *p++ != 0x82 || !(p = send_read_head(p, hop_end, 0, &limit)) ||
        !(p = send_read_head(p, hop_end, 0, &count)) || p != hop_end)
        Py_RETURN_NONE;
    if (limit < 1 || limit > 255 || count >= limit) Py_RETURN_NONE; /* at the limit: Python */
    if (!relay_block(data + at[n - 2], data + at[n - 1], &type, &payload_number, NULL, NULL) ||
        type != 1)
        Py_RETURN_NONE;
    if (n == 5) {
        if (!relay_block(data + at[2], data + at[3], &type, &previous_number, NULL, NULL) ||
            type != 6)
            Py_RETURN_NONE;
    } else {
        previous_number = hop_number > payload_number ? hop_number : payload_number;
        if (previous_number == UINT64_MAX) Py_RETURN_NONE;
        previous_number += 1;
    }
    /* the new data: [limit, count + 1] and [2, [node, 0]] */
    unsigned char hops[12], eid[16], *q = hops;
    *q++ = 0x82;
    q = send_head(q, 0, limit);
    q = send_head(q, 0, count + 1);
    Py_ssize_t hops_len = q - hops;
    q = eid;
    *q++ = 0x82;
    *q++ = 0x02;
    *q++ = 0x82;
    q = send_head(q, 0, node);
    *q++ = 0x00;
    Py_ssize_t eid_len = q - eid;
    /* a block: head, type, number, flags 0, CRC type 2, data, CRC field */
    Py_ssize_t hop_block_len = 1 + 1 + send_head_len(hop_number) + 2 + 1 + hops_len + 5;
    Py_ssize_t prev_block_len = 1 + 1 + send_head_len(previous_number) + 2 + 1 + eid_len + 5;
    Py_ssize_t primary_len = at[1] - at[0], payload_len = at[n - 1] - at[n - 2];
    Py_ssize_t total = 1 + primary_len + hop_block_len + prev_block_len + payload_len + 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (!out) return NULL;
    unsigned char *base = (unsigned char *)PyBytes_AS_STRING(out), *start;
    q = base;
    *q++ = 0x9f;
    memcpy(q, data + at[0], (size_t)primary_len);
    q += primary_len;
    start = q;
    *q++ = 0x86;
    *q++ = 10;
    q = send_head(q, 0, hop_number);
    *q++ = 0x00;
    *q++ = 0x02;
    *q++ = (unsigned char)(0x40 | hops_len);
    memcpy(q, hops, (size_t)hops_len);
    q += hops_len;
    q = send_crc_field(start, q);
    start = q;
    *q++ = 0x86;
    *q++ = 6;
    q = send_head(q, 0, previous_number);
    *q++ = 0x00;
    *q++ = 0x02;
    *q++ = (unsigned char)(0x40 | eid_len);
    memcpy(q, eid, (size_t)eid_len);
    q += eid_len;
    q = send_crc_field(start, q);
    memcpy(q, data + at[n - 2], (size_t)payload_len);
    q += payload_len;
    *q++ = 0xff;
    if (q - base != total) { /* the sizes above and the writes agree */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "relay_forward_bytes: length mismatch");
        return NULL;
    }
    return out;
}

static PyMethodDef relay_path_methods[] = {
    {"relay_forward_bytes", (PyCFunction)(void (*)(void))relay_forward_bytes, METH_FASTCALL,
     "relay_forward_bytes(data, offsets, this_node) -> bytes or None: a received bundle of the "
     "common shape with its hop counted and ipn:this_node.0 as its Previous Node, as "
     "bundling.forward_bytes writes it; None for anything else (the Python road decides)."},
    {NULL, NULL, 0, NULL},
};

static int add_relay_path(PyObject *m) { return PyModule_AddFunctions(m, relay_path_methods); }
