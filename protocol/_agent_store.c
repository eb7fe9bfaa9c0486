/* The in-memory agent store's per-hop methods in C (protocol/agent/agent_store.py).
 *
 * Why: every bundle on every hop is put into a store and later tombstoned (forwarded or
 * delivered) or deleted, its expiry is pushed on a heap and popped again, the agent asks for
 * the next expiry after every batch, and every delivery is remembered for replay; in a
 * 10,000-node simulation these few methods were an eighth of everything beside the
 * signatures, most of it the interpreter's own work over a dozen dict and heap operations.
 *
 * What: put, tombstone, delete, expire, next_expiry and remember, as method descriptors of
 * the accelerated class (agent_store.MemoryAgentStore), reading and writing the very slots
 * the Python reference (PyMemoryAgentStore) uses, so the two can be mixed on one store and a
 * test holds them to the same answers and the same state after every operation. Each takes
 * only the common road: a quota that can refuse (the store's bounded or sharing flag), a
 * record of another type, keyword arguments, a tombstone of a tombstone, floors to raise —
 * anything else calls the reference method, which decides. The heap is Python's heapq (its
 * C functions, called directly), so entries come off in exactly the reference's order.
 *
 * Slot offsets, classes and the reference's functions are handed over once by store_setup()
 * from agent_store.py. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

enum { PUT, TOMBSTONE, DELETE, EXPIRE, NEXT_EXPIRY, REMEMBER, METHODS };
static const char *const method_names[METHODS] = {"put", "tombstone", "delete", "expire",
                                                   "next_expiry", "remember"};

static struct {
    int ready;
    PyObject *reference[METHODS]; /* the Python reference's functions */
    PyTypeObject *record, *seen, *accepted, *duplicate;
    PyObject *of_bundle_id, *of_content_id, *heappush, *heappop, *compact, *slack;
    /* the store's slots */
    Py_ssize_t bundles, tombstones, by_content, expiry, head, sequence, bytes, bounded, sharing,
        seen_records, seen_expiry;
    /* StoredBundle's */
    Py_ssize_t r_id, r_content, r_source, r_destination, r_expires, r_received_at, r_data;
    /* Seen's, Accepted's, Duplicate's */
    Py_ssize_t s_issuer, s_sequence, s_keep_until, a_id, d_id, d_of, d_existing;
} S;

/* The reference method, for anything off the common road. */
static PyObject *reference(int method, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    PyObject *stack[8];
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (total > 7) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) stack[i + 1] = args[i];
    return PyObject_Vectorcall(S.reference[method], stack, (size_t)(nargs + 1), kwnames);
}

/* A fresh attrs instance of a frozen, slotted class with no __init__ logic of its own
 * (checked by agent_store.py), its slots set (new references taken). */
static PyObject *made(PyTypeObject *type, int n, const Py_ssize_t *offsets, PyObject **values) {
    PyObject *obj = type->tp_alloc(type, 0);
    if (!obj) return NULL;
    for (int i = 0; i < n; i++) SLOT(obj, offsets[i]) = Py_NewRef(values[i]);
    return obj;
}

static PyObject *accepted(PyObject *key) {
    return made(S.accepted, 1, &S.a_id, &key);
}

static PyObject *duplicate(PyObject *key, PyObject *of, PyObject *existing) {
    Py_ssize_t offsets[3] = {S.d_id, S.d_of, S.d_existing};
    PyObject *values[3] = {key, of, existing};
    return made(S.duplicate, 3, offsets, values);
}

/* slot += delta, for an int slot; 0 or -1. */
static int add_to(PyObject *self, Py_ssize_t offset, Py_ssize_t delta) {
    PyObject *old = SLOT(self, offset);
    int overflow = 0;
    long long value = PyLong_CheckExact(old) ? PyLong_AsLongLongAndOverflow(old, &overflow) : 0;
    PyObject *updated;
    if (PyLong_CheckExact(old) && !overflow && !(value == -1 && PyErr_Occurred()) &&
        value < (1LL << 62) && value > -(1LL << 62)) {
        updated = PyLong_FromLongLong(value + delta);
    } else {
        PyErr_Clear();
        PyObject *step = PyLong_FromSsize_t(delta);
        if (!step) return -1;
        updated = PyNumber_Add(old, step);
        Py_DECREF(step);
    }
    if (!updated) return -1;
    Py_SETREF(SLOT(self, offset), updated);
    return 0;
}

/* heappush(heap, (a, b, c)); 0 or -1. */
static int push(PyObject *heap, PyObject *a, PyObject *b, PyObject *c) {
    PyObject *entry = PyTuple_Pack(3, a, b, c);
    if (!entry) return -1;
    PyObject *args[2] = {heap, entry};
    PyObject *done = PyObject_Vectorcall(S.heappush, args, 2, NULL);
    Py_DECREF(entry);
    if (!done) return -1;
    Py_DECREF(done);
    return 0;
}

/* The store's next sequence number (self._sequence += 1), a new reference. */
static PyObject *next_sequence(PyObject *self) {
    if (add_to(self, S.sequence, 1) < 0) return NULL;
    return Py_NewRef(SLOT(self, S.sequence));
}

/* Whether every slot the methods read is set, and holds the type they expect. */
static int common_store(PyObject *self) {
    PyObject *bundles = SLOT(self, S.bundles), *tombstones = SLOT(self, S.tombstones);
    PyObject *by_content = SLOT(self, S.by_content), *expiry = SLOT(self, S.expiry);
    return S.ready && bundles && PyDict_CheckExact(bundles) && tombstones &&
           PyDict_CheckExact(tombstones) && by_content && PyDict_CheckExact(by_content) &&
           expiry && PyList_CheckExact(expiry) && SLOT(self, S.head) &&
           SLOT(self, S.sequence) && SLOT(self, S.bytes) && SLOT(self, S.bounded) == Py_False &&
           SLOT(self, S.sharing) == Py_False;
}

/* self._head = None if it is the entry of key (its time may change); 0 or -1. */
static int forget_head(PyObject *self, PyObject *key) {
    PyObject *head = SLOT(self, S.head);
    if (head == Py_None) return 0;
    if (!PyTuple_CheckExact(head) || PyTuple_GET_SIZE(head) != 3) return 0;
    int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(head, 2), key, Py_EQ);
    if (same < 0) return -1;
    if (same) Py_SETREF(SLOT(self, S.head), Py_NewRef(Py_None));
    return 0;
}

static PyObject *store_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    if (kwnames || nargs != 1 || Py_TYPE(args[0]) != S.record || !common_store(self))
        return reference(PUT, self, args, nargs, kwnames);
    PyObject *bundle = args[0];
    PyObject *key = SLOT(bundle, S.r_id), *content = SLOT(bundle, S.r_content);
    PyObject *data = SLOT(bundle, S.r_data), *expires_at = SLOT(bundle, S.r_expires);
    if (!key || !content || !data || !PyBytes_CheckExact(data) || !expires_at)
        return reference(PUT, self, args, nargs, kwnames);
    PyObject *bundles = SLOT(self, S.bundles), *by_content = SLOT(self, S.by_content);
    int held = PyDict_Contains(bundles, key);
    if (held == 0) held = PyDict_Contains(SLOT(self, S.tombstones), key);
    if (held < 0) return NULL;
    if (held) return duplicate(key, S.of_bundle_id, key);
    if (content != Py_None) {
        PyObject *existing = PyDict_GetItemWithError(by_content, content);
        if (existing) return duplicate(key, S.of_content_id, existing);
        if (PyErr_Occurred()) return NULL;
    }
    if (PyDict_SetItem(bundles, key, bundle) < 0) return NULL;
    if (content != Py_None && PyDict_SetItem(by_content, content, key) < 0) return NULL;
    if (add_to(self, S.bytes, PyBytes_GET_SIZE(data)) < 0) return NULL;
    PyObject *sequence = next_sequence(self);
    if (!sequence) return NULL;
    int pushed = push(SLOT(self, S.expiry), expires_at, sequence, key);
    Py_DECREF(sequence);
    if (pushed < 0) return NULL;
    return accepted(key);
}

static PyObject *store_tombstone(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    if (kwnames || nargs < 2 || nargs > 3 || !common_store(self))
        return reference(TOMBSTONE, self, args, nargs, kwnames);
    PyObject *key = args[0], *next_hop = args[1], *expires_at = nargs == 3 ? args[2] : Py_None;
    PyObject *bundles = SLOT(self, S.bundles);
    PyObject *bundle = PyDict_GetItemWithError(bundles, key);
    if (!bundle) {
        if (PyErr_Occurred()) return NULL;
        return reference(TOMBSTONE, self, args, nargs, kwnames); /* a record, or nothing */
    }
    PyObject *data = SLOT(bundle, S.r_data), *held_until = SLOT(bundle, S.r_expires);
    if (Py_TYPE(bundle) != S.record || !data || !PyBytes_CheckExact(data) || !held_until ||
        !SLOT(bundle, S.r_content) || !SLOT(bundle, S.r_source) ||
        !SLOT(bundle, S.r_destination) || !SLOT(bundle, S.r_received_at))
        return reference(TOMBSTONE, self, args, nargs, kwnames);
    Py_INCREF(bundle); /* held here: the comparisons below may run Python code, and the dict's
                        * reference goes further down */
    PyObject *record = NULL;
    int earlier = 0; /* expires_at < held_until: the record goes before the bundle would */
    if (expires_at != Py_None) {
        int later = PyObject_RichCompareBool(expires_at, held_until, Py_GE);
        if (later < 0) goto fail;
        earlier = !later;
    }
    if (forget_head(self, key) < 0) goto fail;
    PyObject *until = earlier ? expires_at : held_until;
    if (PyDict_DelItem(bundles, key) < 0 ||
        add_to(self, S.bytes, -PyBytes_GET_SIZE(data)) < 0)
        goto fail;
    record = PyTuple_Pack(6, next_hop, until, SLOT(bundle, S.r_content), SLOT(bundle, S.r_source),
                          SLOT(bundle, S.r_destination), SLOT(bundle, S.r_received_at));
    if (!record || PyDict_SetItem(SLOT(self, S.tombstones), key, record) < 0) goto fail;
    Py_CLEAR(record);
    if (earlier) {
        PyObject *sequence = next_sequence(self);
        if (!sequence) goto fail;
        PyObject *expiry = SLOT(self, S.expiry);
        int pushed = push(expiry, until, sequence, key);
        Py_DECREF(sequence);
        if (pushed < 0) goto fail;
        /* The entry at held_until is stale now: swept once stale ones outnumber the live
         * (the reference's rule and its _compact, which reads the class's _slack). */
        Py_ssize_t live = PyDict_GET_SIZE(bundles) + PyDict_GET_SIZE(SLOT(self, S.tombstones));
        if (PyList_GET_SIZE(expiry) > 2 * live) {
            PyObject *slack = PyObject_GetAttr(self, S.slack);
            if (!slack) goto fail;
            Py_ssize_t allowance = PyLong_AsSsize_t(slack);
            Py_DECREF(slack);
            if (allowance == -1 && PyErr_Occurred()) goto fail;
            if (PyList_GET_SIZE(expiry) > 2 * live + allowance) {
                PyObject *done = PyObject_CallMethodNoArgs(self, S.compact);
                if (!done) goto fail;
                Py_DECREF(done);
            }
        }
    }
    Py_DECREF(bundle);
    Py_RETURN_TRUE;
fail:
    Py_XDECREF(record);
    Py_DECREF(bundle);
    return NULL;
}

/* delete(key) on the common road: 1 deleted, 0 not held, -1 error. */
static int deleted(PyObject *self, PyObject *key) {
    if (forget_head(self, key) < 0) return -1;
    PyObject *bundles = SLOT(self, S.bundles), *content;
    PyObject *bundle = PyDict_GetItemWithError(bundles, key);
    if (bundle) {
        PyObject *data = SLOT(bundle, S.r_data);
        content = SLOT(bundle, S.r_content);
        if (!data || !PyBytes_CheckExact(data) || !content) {
            PyErr_SetString(PyExc_TypeError, "a held record without its bytes or content id");
            return -1;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(data); /* read before the dict lets the record go */
        Py_INCREF(content);
        if (PyDict_DelItem(bundles, key) < 0 || add_to(self, S.bytes, -size) < 0) {
            Py_DECREF(content);
            return -1;
        }
    } else {
        if (PyErr_Occurred()) return -1;
        PyObject *tombstones = SLOT(self, S.tombstones);
        PyObject *record = PyDict_GetItemWithError(tombstones, key);
        if (!record) return PyErr_Occurred() ? -1 : 0;
        if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) != 6) {
            PyErr_SetString(PyExc_TypeError, "a tombstone that is not a 6-tuple");
            return -1;
        }
        content = Py_NewRef(PyTuple_GET_ITEM(record, 2));
        if (PyDict_DelItem(tombstones, key) < 0) {
            Py_DECREF(content);
            return -1;
        }
    }
    int status = 1;
    if (content != Py_None) {
        PyObject *by_content = SLOT(self, S.by_content);
        PyObject *owner = PyDict_GetItemWithError(by_content, content);
        if (owner) {
            int same = PyObject_RichCompareBool(owner, key, Py_EQ);
            if (same < 0 || (same && PyDict_DelItem(by_content, content) < 0)) status = -1;
        } else if (PyErr_Occurred()) {
            status = -1;
        }
    }
    Py_DECREF(content);
    return status;
}

static PyObject *store_delete(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    if (kwnames || nargs != 1 || !common_store(self))
        return reference(DELETE, self, args, nargs, kwnames);
    int done = deleted(self, args[0]);
    if (done < 0) return NULL;
    return PyBool_FromLong(done);
}

/* The time key is held until (None: not held), borrowed. */
static PyObject *held_until(PyObject *self, PyObject *key, int *error) {
    PyObject *bundle = PyDict_GetItemWithError(SLOT(self, S.bundles), key);
    if (bundle) return SLOT(bundle, S.r_expires);
    if (PyErr_Occurred()) goto fail;
    PyObject *record = PyDict_GetItemWithError(SLOT(self, S.tombstones), key);
    if (record) return PyTuple_CheckExact(record) && PyTuple_GET_SIZE(record) == 6
                           ? PyTuple_GET_ITEM(record, 1)
                           : Py_None;
    if (PyErr_Occurred()) goto fail;
    return Py_None;
fail:
    *error = 1;
    return NULL;
}

/* Whether the heap's head is due at now: 1, 0, or -1. */
static int head_due(PyObject *heap, PyObject *now) {
    if (PyList_GET_SIZE(heap) == 0) return 0;
    PyObject *head = PyList_GET_ITEM(heap, 0);
    if (!PyTuple_CheckExact(head) || PyTuple_GET_SIZE(head) != 3) {
        PyErr_SetString(PyExc_TypeError, "an expiry entry that is not a 3-tuple");
        return -1;
    }
    return PyObject_RichCompareBool(PyTuple_GET_ITEM(head, 0), now, Py_LE);
}

static PyObject *store_expire(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    if (kwnames || nargs != 1 || !common_store(self))
        return reference(EXPIRE, self, args, nargs, kwnames);
    PyObject *now = args[0], *heap = Py_NewRef(SLOT(self, S.expiry)), *gone = PyList_New(0);
    if (!gone) goto fail;
    int due;
    while ((due = head_due(heap, now)) > 0) {
        PyObject *entry = PyObject_Vectorcall(S.heappop, &heap, 1, NULL);
        if (!entry) goto fail;
        PyObject *expires_at = PyTuple_GET_ITEM(entry, 0), *key = PyTuple_GET_ITEM(entry, 2);
        int error = 0, current = 0, done = 0;
        PyObject *until = held_until(self, key, &error);
        if (!error) current = PyObject_RichCompareBool(until, expires_at, Py_EQ);
        /* Lazy deletion: the entry may be stale (deleted, or tombstoned to an earlier time). */
        if (current > 0) done = deleted(self, key);
        if (error || current < 0 || done < 0 || (done && PyList_Append(gone, key) < 0)) {
            Py_DECREF(entry);
            goto fail;
        }
        Py_DECREF(entry);
    }
    if (due < 0) goto fail;
    Py_DECREF(heap);
    return gone;
fail:
    Py_DECREF(heap);
    Py_XDECREF(gone);
    return NULL;
}

static PyObject *store_next_expiry(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    if (kwnames || nargs != 0 || !common_store(self))
        return reference(NEXT_EXPIRY, self, args, nargs, kwnames);
    PyObject *heap = SLOT(self, S.expiry);
    /* The entry found current last time is still current while it heads the heap (the
     * reference's comment says why). */
    if (PyList_GET_SIZE(heap) && PyList_GET_ITEM(heap, 0) == SLOT(self, S.head))
        return Py_NewRef(PyTuple_GET_ITEM(SLOT(self, S.head), 0));
    Py_INCREF(heap);
    while (PyList_GET_SIZE(heap)) {
        PyObject *head = PyList_GET_ITEM(heap, 0);
        if (!PyTuple_CheckExact(head) || PyTuple_GET_SIZE(head) != 3) {
            PyErr_SetString(PyExc_TypeError, "an expiry entry that is not a 3-tuple");
            goto fail;
        }
        PyObject *expires_at = PyTuple_GET_ITEM(head, 0);
        int error = 0;
        PyObject *until = held_until(self, PyTuple_GET_ITEM(head, 2), &error);
        if (error) goto fail;
        int current = PyObject_RichCompareBool(until, expires_at, Py_EQ);
        if (current < 0) goto fail;
        if (current) {
            Py_SETREF(SLOT(self, S.head), Py_NewRef(head));
            Py_DECREF(heap);
            return Py_NewRef(expires_at);
        }
        PyObject *stale = PyObject_Vectorcall(S.heappop, &heap, 1, NULL);
        if (!stale) goto fail;
        Py_DECREF(stale);
    }
    Py_DECREF(heap);
    Py_RETURN_NONE;
fail:
    Py_DECREF(heap);
    return NULL;
}

static PyObject *store_remember(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    /* Floors to raise (rare) and anything but a tuple or list of Seen take the reference. */
    if (kwnames || nargs != 2 || !S.ready ||
        !(PyTuple_CheckExact(args[0]) || PyList_CheckExact(args[0])))
        return reference(REMEMBER, self, args, nargs, kwnames);
    int floors = PyObject_IsTrue(args[1]);
    if (floors < 0) return NULL;
    PyObject *kept = SLOT(self, S.seen_records), *heap = SLOT(self, S.seen_expiry);
    if (floors || !kept || !PyDict_CheckExact(kept) || !heap || !PyList_CheckExact(heap))
        return reference(REMEMBER, self, args, nargs, kwnames);
    /* Read through PySequence_Fast_ITEMS: the caller's tuple or list, not copied. */
    PyObject *seen = args[0], **records = PySequence_Fast_ITEMS(seen);
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seen);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = records[i];
        PyObject *issuer = SLOT(record, S.s_issuer), *sequence = SLOT(record, S.s_sequence);
        if (Py_TYPE(record) != S.seen || !issuer || !PyLong_CheckExact(issuer) || !sequence ||
            !PyLong_CheckExact(sequence) || !SLOT(record, S.s_keep_until))
            return reference(REMEMBER, self, args, nargs, kwnames);
    }
    /* Storing runs no Python code (the keys are tuples of ints), so the records stay put. */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = records[i];
        PyObject *issuer = SLOT(record, S.s_issuer), *sequence = SLOT(record, S.s_sequence);
        PyObject *key = PyTuple_Pack(2, issuer, sequence);
        if (!key) return NULL;
        int stored = PyDict_SetItem(kept, key, record);
        Py_DECREF(key);
        if (stored < 0 || push(heap, SLOT(record, S.s_keep_until), issuer, sequence) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef store_method_defs[METHODS] = {
    {"put", (PyCFunction)(void (*)(void))store_put, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"tombstone", (PyCFunction)(void (*)(void))store_tombstone, METH_FASTCALL | METH_KEYWORDS,
     NULL},
    {"delete", (PyCFunction)(void (*)(void))store_delete, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"expire", (PyCFunction)(void (*)(void))store_expire, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"next_expiry", (PyCFunction)(void (*)(void))store_next_expiry,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"remember", (PyCFunction)(void (*)(void))store_remember, METH_FASTCALL | METH_KEYWORDS,
     NULL},
};

static int offset_of(PyObject *offsets, Py_ssize_t i, Py_ssize_t *out) {
    *out = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i));
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* store_setup(cls, reference_cls, (record, seen, accepted, duplicate), (of_bundle_id,
 * of_content_id), heapq_module, store_offsets[11], record_offsets[7], other_offsets[7])
 * -> {name: method descriptor of cls}: what agent_store.py sets on the accelerated class. */
static PyObject *store_setup(PyObject *module, PyObject *args) {
    PyObject *cls, *reference_cls, *types, *ofs, *heapq, *store_offsets, *record_offsets,
        *other_offsets;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OO!O!O!", &PyType_Type, &cls, &PyType_Type,
                          &reference_cls, &PyTuple_Type, &types, &PyTuple_Type, &ofs, &heapq,
                          &PyTuple_Type, &store_offsets, &PyTuple_Type, &record_offsets,
                          &PyTuple_Type, &other_offsets))
        return NULL;
    if (PyTuple_GET_SIZE(types) != 4 || PyTuple_GET_SIZE(ofs) != 2 ||
        PyTuple_GET_SIZE(store_offsets) != 11 || PyTuple_GET_SIZE(record_offsets) != 7 ||
        PyTuple_GET_SIZE(other_offsets) != 7) {
        PyErr_SetString(PyExc_ValueError, "store_setup: wrong number of types or offsets");
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        if (!PyType_Check(PyTuple_GET_ITEM(types, i))) {
            PyErr_SetString(PyExc_TypeError, "store_setup: not a class");
            return NULL;
        }
    Py_ssize_t *store_slots[11] = {&S.bundles, &S.tombstones, &S.by_content, &S.expiry,
                                   &S.head, &S.sequence, &S.bytes, &S.bounded, &S.sharing,
                                   &S.seen_records, &S.seen_expiry};
    Py_ssize_t *record_slots[7] = {&S.r_id, &S.r_content, &S.r_source, &S.r_destination,
                                   &S.r_expires, &S.r_received_at, &S.r_data};
    Py_ssize_t *other_slots[7] = {&S.s_issuer, &S.s_sequence, &S.s_keep_until, &S.a_id,
                                  &S.d_id, &S.d_of, &S.d_existing};
    for (int i = 0; i < 11; i++)
        if (offset_of(store_offsets, i, store_slots[i]) < 0) return NULL;
    for (int i = 0; i < 7; i++)
        if (offset_of(record_offsets, i, record_slots[i]) < 0 ||
            offset_of(other_offsets, i, other_slots[i]) < 0)
            return NULL;
    PyObject *push = PyObject_GetAttrString(heapq, "heappush");
    PyObject *pop = push ? PyObject_GetAttrString(heapq, "heappop") : NULL;
    if (!pop) {
        Py_XDECREF(push);
        return NULL;
    }
    for (int i = 0; i < METHODS; i++) {
        PyObject *function = PyObject_GetAttrString(reference_cls, method_names[i]);
        if (!function) {
            Py_DECREF(push);
            Py_DECREF(pop);
            return NULL;
        }
        Py_XSETREF(S.reference[i], function);
    }
    Py_XSETREF(S.heappush, push);
    Py_XSETREF(S.heappop, pop);
    Py_XSETREF(S.record, (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, 0)));
    Py_XSETREF(S.seen, (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, 1)));
    Py_XSETREF(S.accepted, (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, 2)));
    Py_XSETREF(S.duplicate, (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, 3)));
    Py_XSETREF(S.of_bundle_id, Py_NewRef(PyTuple_GET_ITEM(ofs, 0)));
    Py_XSETREF(S.of_content_id, Py_NewRef(PyTuple_GET_ITEM(ofs, 1)));
    if (!S.compact && !(S.compact = PyUnicode_InternFromString("_compact"))) return NULL;
    if (!S.slack && !(S.slack = PyUnicode_InternFromString("_slack"))) return NULL;
    PyObject *methods = PyDict_New();
    if (!methods) return NULL;
    for (int i = 0; i < METHODS; i++) {
        PyObject *descriptor = PyDescr_NewMethod((PyTypeObject *)cls, &store_method_defs[i]);
        if (!descriptor || PyDict_SetItemString(methods, method_names[i], descriptor) < 0) {
            Py_XDECREF(descriptor);
            Py_DECREF(methods);
            return NULL;
        }
        Py_DECREF(descriptor);
    }
    S.ready = 1;
    return methods;
}

static PyMethodDef agent_store_methods[] = {
    {"store_setup", store_setup, METH_VARARGS,
     "store_setup(cls, reference_cls, types, duplicate_ofs, heapq, store_offsets, "
     "record_offsets, other_offsets) -> {name: method}: the agent store's per-hop methods "
     "in C, for agent_store.py to set on cls (see _agent_store.c)."},
    {NULL, NULL, 0, NULL},
};

/* Called by PyInit__speedups. */
int add_agent_store(PyObject *m) { return PyModule_AddFunctions(m, agent_store_methods); }
