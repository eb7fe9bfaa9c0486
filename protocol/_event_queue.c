/* EventQueue: the simulator's timed events (runtime/sim/engine.py) in one C array.
 *
 * Why: the simulator kept its events as Python int keys (time << 40 | seq) in a heapq list,
 * each event's payload in a dict under its key. Every comparison of heapq's sift walked two
 * int objects scattered over the heap (a cache miss each), and every event paid the key's
 * arithmetic, a dict insert and a dict pop: about 5% of a fleet run's CPU beside the
 * signatures. Here an entry is {time, seq, item} in one contiguous array, compared as two
 * machine integers, and the item comes back as it went in.
 *
 * Order: by time, then by insertion (seq, given by the queue on push), so events at the same
 * time come out in the order they were pushed, exactly as the (time, seq) keys did; a run
 * stays a function of its seed. The heap is 4-ary: half the levels of a binary heap, and a
 * node's four children share one or two cache lines.
 *
 * The pure-Python fallback with the same API is runtime/sim/event_queue.py; the tests hold
 * the two against a sort by (time, insertion order). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    int64_t time;
    uint64_t seq;
    PyObject *item; /* a strong reference */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *heap;
    Py_ssize_t size;
    Py_ssize_t capacity;
    uint64_t seq; /* the next entry's */
} EventQueue;

#define ARITY 4

static inline int before(const Entry *x, const Entry *y) {
    return x->time < y->time || (x->time == y->time && x->seq < y->seq);
}

/* A Python int as a DTN time: TypeError for anything but an int, OverflowError outside
 * int64 (the same errors as the fallback). */
static int as_time(PyObject *o, int64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "an event time must be an int, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    long long t = PyLong_AsLongLong(o);
    if (t == -1 && PyErr_Occurred()) return -1;
    *out = (int64_t)t;
    return 0;
}

static PyObject *eq_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "EventQueue() takes no arguments");
        return NULL;
    }
    EventQueue *self = (EventQueue *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->heap = NULL;
    self->size = self->capacity = 0;
    self->seq = 0;
    return (PyObject *)self;
}

static int eq_traverse(EventQueue *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < self->size; i++) Py_VISIT(self->heap[i].item);
    return 0;
}

/* Drops every item. The array is detached first: an item's finaliser may touch the queue. */
static int eq_clear(EventQueue *self) {
    Entry *heap = self->heap;
    Py_ssize_t size = self->size;
    self->heap = NULL;
    self->size = self->capacity = 0;
    for (Py_ssize_t i = 0; i < size; i++) Py_DECREF(heap[i].item);
    PyMem_Free(heap);
    return 0;
}

static void eq_dealloc(EventQueue *self) {
    PyObject_GC_UnTrack(self);
    eq_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int grow(EventQueue *self) {
    Py_ssize_t capacity = self->capacity ? self->capacity : 64;
    if (self->capacity) {
        if (capacity > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Entry)) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    Entry *heap = PyMem_Realloc(self->heap, (size_t)capacity * sizeof(Entry));
    if (!heap) {
        PyErr_NoMemory();
        return -1;
    }
    self->heap = heap;
    self->capacity = capacity;
    return 0;
}

static PyObject *eq_push(EventQueue *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "push() takes 2 arguments (time, item), %zd given", nargs);
        return NULL;
    }
    int64_t time;
    if (as_time(args[0], &time) < 0) return NULL;
    if (args[1] == Py_None) { /* pop_until's "nothing due" */
        PyErr_SetString(PyExc_TypeError, "an event item may not be None");
        return NULL;
    }
    if (self->seq == UINT64_MAX) {
        PyErr_SetString(PyExc_OverflowError, "2**64 events pushed on one queue");
        return NULL;
    }
    if (self->size == self->capacity && grow(self) < 0) return NULL;
    Entry entry = {time, self->seq++, Py_NewRef(args[1])};
    /* Sift up: move parents down until the entry's place is found. */
    Entry *heap = self->heap;
    Py_ssize_t i = self->size++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / ARITY;
        if (!before(&entry, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = entry;
    Py_RETURN_NONE;
}

/* The earliest entry out: the last one goes to the root's hole and sifts down. */
static PyObject *take_root(EventQueue *self) {
    Entry *heap = self->heap;
    PyObject *item = heap[0].item;
    Py_ssize_t n = --self->size;
    if (n == 0) return item;
    Entry last = heap[n];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t first = i * ARITY + 1;
        if (first >= n) break;
        Py_ssize_t end = first + ARITY < n ? first + ARITY : n, least = first;
        for (Py_ssize_t c = first + 1; c < end; c++)
            if (before(&heap[c], &heap[least])) least = c;
        if (!before(&heap[least], &last)) break;
        heap[i] = heap[least];
        i = least;
    }
    heap[i] = last;
    return item; /* the queue's reference goes to the caller */
}

static PyObject *eq_pop_until(EventQueue *self, PyObject *limit) {
    if (!PyLong_Check(limit)) {
        PyErr_Format(PyExc_TypeError, "a limit must be an int, not %.100s",
                     Py_TYPE(limit)->tp_name);
        return NULL;
    }
    if (self->size == 0) Py_RETURN_NONE;
    int overflow;
    long long until = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (until == -1 && PyErr_Occurred()) return NULL;
    /* A limit past int64 lets every entry out, one before it none: no error, as an int
     * comparison would say. */
    if (overflow < 0 || (overflow == 0 && self->heap[0].time > until)) Py_RETURN_NONE;
    return take_root(self);
}

static PyObject *eq_next_time(EventQueue *self, PyObject *unused) {
    if (self->size == 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(self->heap[0].time);
}

static Py_ssize_t eq_len(EventQueue *self) { return self->size; }

static PyMethodDef eq_methods[] = {
    {"push", (PyCFunction)(void (*)(void))eq_push, METH_FASTCALL,
     "push(time, item): item (not None) is due at time (an int64); ties keep push order."},
    {"pop_until", (PyCFunction)eq_pop_until, METH_O,
     "pop_until(limit): the earliest item if its time <= limit, else None."},
    {"next_time", (PyCFunction)eq_next_time, METH_NOARGS,
     "next_time(): the earliest item's time, None when empty."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods eq_as_sequence = {.sq_length = (lenfunc)eq_len};

static PyTypeObject EventQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fleetwire.protocol._speedups.EventQueue",
    .tp_doc = "Items due at int64 times, out earliest first, ties in push order "
              "(runtime/sim/engine.py's events).",
    .tp_basicsize = sizeof(EventQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = eq_new,
    .tp_dealloc = (destructor)eq_dealloc,
    .tp_traverse = (traverseproc)eq_traverse,
    .tp_clear = (inquiry)eq_clear,
    .tp_methods = eq_methods,
    .tp_as_sequence = &eq_as_sequence,
};

int add_event_queue(PyObject *m) {
    if (PyType_Ready(&EventQueueType) < 0) return -1;
    return PyModule_AddObjectRef(m, "EventQueue", (PyObject *)&EventQueueType);
}
