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

static PyMethodDef methods[] = {
    {"write", speedups_write, METH_VARARGS,
     "write(spec, message) -> bytes | None: deterministic CBOR, or None for the Python road."},
    {"write_or", speedups_write_or, METH_VARARGS,
     "write_or(spec, fallback, message) -> bytes: write(), or fallback(message) where the C "
     "code defers."},
    {"slot_offset", speedups_slot_offset, METH_O,
     "slot_offset(member_descriptor) -> int: the offset of a __slots__ member."},
    {"read_message", speedups_read_message, METH_VARARGS,
     "read_message(specs, data) -> message | None: the message if data is valid and "
     "deterministic in the common form, else None for the Python road."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Optional C accelerator for the message codec (see protocol/messages/accel.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&SlotInitType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "SlotInit", (PyObject *)&SlotInitType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
