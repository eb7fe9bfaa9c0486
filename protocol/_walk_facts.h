/* Part of protocol/_speedups.c (included there after the bundle walk, whose static helpers
 * it uses): a received bundle's per-hop facts, read in the walk's pass.
 *
 * walk_bundle_facts(spec, data, payload_tag, this_node)
 *     -> (bundle, offsets, bundle_key, content_key, source_text, destination_text, local,
 *         expires_at | None, hop_over, exclude) | None
 *
 * Why: a node takes every bundle on every hop through walk_bundle and then the agent's
 * bundling.accept_record, Bundle.hop_count and, relaying, Bundle.previous_node; those read
 * back, in some twenty Python calls, what the walk has just had under its cursor. Here they
 * are read in C, for exactly the bundles walk_bundle takes (anything else: None, and the
 * Python road — decode_bundle_offsets, accept_record — decides, errors included):
 *
 * - bundle_key: the bundle id (RFC 9171 §5.4: source, creation timestamp; never a fragment
 *   here) as BundleId.key() writes it, 0x83 + the source's CBOR + time + sequence (the walk
 *   takes shortest forms only, so the bytes as received are the ones key() writes), then the
 *   first ``payload_tag`` bytes of the payload's SHA-256 (bundling.py's module docstring);
 * - content_key: the payload's SHA-256 + the destination's CBOR; the caller keeps it only
 *   if the payload parses as a COSE_Sign1 (that rule stays in Python);
 * - source_text / destination_text: str() of the EIDs, as the store keeps them;
 * - local: the destination is ipn:this_node.*;
 * - expires_at: creation time + lifetime (§4.3.1) when the time is not zero; None: the
 *   Python road (no creation time: the Bundle Age block, §4.4.2, says how old it is);
 * - hop_over: the Hop Count block's count is above its limit (§4.4.3; False without one);
 * - exclude: (node,) when a Previous Node block (§4.4.1) names an ipn node, else (): the
 *   neighbour the router must not send the bundle straight back to.
 *
 * Every value is held against the Python road by tests/test_walk_facts.py. */

static PyObject *walk_facts_dtn_none; /* "dtn:none", made once */

/* str() of a walked EID (eid.py: IpnEid.__str__ for a 2-element ipn EID, NullEid.__str__),
 * kept beside the EID in the walk's cache: a node names the same few on every hop. */
static PyObject *walk_eid_text(const EidFacts *e) {
    if (!e->is_ipn) {
        if (!walk_facts_dtn_none && !(walk_facts_dtn_none = PyUnicode_InternFromString("dtn:none")))
            return NULL;
        return Py_NewRef(walk_facts_dtn_none);
    }
    EidCacheEntry *entry = NULL;
    if (e->len <= EID_CACHE_WIRE) {
        entry = &eid_cache[eid_cache_slot(e->wire, e->len)];
        if (!entry->eid || entry->len != e->len || memcmp(entry->wire, e->wire, (size_t)e->len))
            entry = NULL; /* another EID's slot now: no text kept for this one */
        else if (entry->text)
            return Py_NewRef(entry->text);
    }
    PyObject *text = PyUnicode_FromFormat("ipn:%llu.%llu", (unsigned long long)e->node,
                                          (unsigned long long)e->service);
    if (text && entry) Py_XSETREF(entry->text, Py_NewRef(text));
    return text;
}

/* RFC 9171 §5.4, §4.3.1: the bundle id key (BundleId.key(): 0x83, source, time, sequence)
 * followed by the first ``tag`` bytes of the payload digest, in one bytes object. */
static PyObject *walk_bundle_key(const PrimaryFacts *p, const unsigned char digest[32],
                                 Py_ssize_t tag) {
    Py_ssize_t creation = p->creation_end - p->creation_items;
    PyObject *key = PyBytes_FromStringAndSize(NULL, 1 + p->source.len + creation + tag);
    if (!key) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(key);
    *out++ = 0x83;
    memcpy(out, p->source.wire, (size_t)p->source.len);
    out += p->source.len;
    memcpy(out, p->creation_items, (size_t)creation);
    memcpy(out + creation, digest, (size_t)tag);
    return key;
}

/* The hop count's and previous node's facts of the first (the only: rules_kept) Hop Count
 * (§4.4.3) and Previous Node (§4.4.1) blocks; 0, or -1 if a block is not as extension_fine
 * took it (it always is: the caller then defers all the same). */
static int walk_hops_and_previous(const BlockFacts *blocks, Py_ssize_t n, int *hop_over,
                                  int *has_previous, uint64_t *previous) {
    int hops_seen = 0, previous_seen = 0;
    *hop_over = 0;
    *has_previous = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const BlockFacts *b = &blocks[i];
        Walk w = {b->data, b->data, b->data + b->length};
        uint64_t items, limit, count, service;
        if (b->type == 10 && !hops_seen) {
            hops_seen = 1;
            if (walk_head(&w, 4, &items) || items != 2 || walk_uint(&w, &limit) ||
                walk_uint(&w, &count) || w.p != w.end)
                return -1;
            *hop_over = count > limit;
        } else if (b->type == 6 && !previous_seen) {
            previous_seen = 1;
            if (b->length == 3 && w.p[0] == 0x82 && w.p[1] == 0x01 && w.p[2] == 0x00)
                continue; /* dtn:none: no ipn node to leave out */
            if (b->length < 3 || w.p[0] != 0x82 || w.p[1] != 0x02 || w.p[2] != 0x82) return -1;
            w.p += 3;
            if (walk_uint(&w, previous) || walk_uint(&w, &service) || w.p != w.end) return -1;
            *has_previous = 1;
        }
    }
    return 0;
}

/* creation time + lifetime (§4.3.1) as a Python int: past 64 bits too, as Python adds. */
static PyObject *walk_expires_at(uint64_t time, uint64_t lifetime) {
    if (time + lifetime >= time) return PyLong_FromUnsignedLongLong(time + lifetime);
    PyObject *a = PyLong_FromUnsignedLongLong(time), *b = PyLong_FromUnsignedLongLong(lifetime);
    PyObject *sum = a && b ? PyNumber_Add(a, b) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return sum;
}

static PyObject *speedups_walk_bundle_facts(PyObject *self, PyObject *const *args,
                                            Py_ssize_t nargs) {
    if (nargs != 4 || !PyTuple_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyLong_Check(args[2]) || !PyLong_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "walk_bundle_facts(spec: tuple, data: bytes, payload_tag: int, "
                        "this_node: int)");
        return NULL;
    }
    Py_ssize_t tag = PyLong_AsSsize_t(args[2]);
    if (tag == -1 && PyErr_Occurred()) return NULL;
    if (tag < 0 || tag > 32) {
        PyErr_SetString(PyExc_ValueError, "walk_bundle_facts: payload_tag in 0..32");
        return NULL;
    }
    /* A node number outside 0..2**64-1 names no walked destination (those are below 2**32). */
    int overflow = 0;
    long long this_node = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (this_node == -1 && PyErr_Occurred()) return NULL;
    PrimaryFacts p;
    BlockFacts blocks[WALK_MAX_BLOCKS];
    Py_ssize_t n = 0;
    PyObject *walked = walk_whole(args[0], args[1], &p, blocks, &n);
    if (!walked || walked == Py_None) return walked;
    int hop_over, has_previous;
    uint64_t previous = 0;
    if (walk_hops_and_previous(blocks, n, &hop_over, &has_previous, &previous) < 0) {
        Py_DECREF(walked);
        Py_RETURN_NONE;
    }
    /* The payload is the last block (rules_kept); its digest names it in both keys. */
    unsigned char digest[32];
    fleetwire_sha256(blocks[n - 1].data, (size_t)blocks[n - 1].length, digest);
    int local = p.destination.is_ipn && !overflow && this_node >= 0 &&
                p.destination.node == (uint64_t)this_node;
    PyObject *expires_at = p.time ? walk_expires_at(p.time, p.lifetime) : Py_NewRef(Py_None);
    PyObject *content_key = PyBytes_FromStringAndSize(NULL, 32 + p.destination.len);
    if (content_key) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(content_key);
        memcpy(out, digest, 32);
        memcpy(out + 32, p.destination.wire, (size_t)p.destination.len);
    }
    PyObject *exclude = has_previous ? Py_BuildValue("(K)", (unsigned long long)previous)
                                     : PyTuple_New(0);
    PyObject *items[8] = {
        walk_bundle_key(&p, digest, tag), content_key, walk_eid_text(&p.source),
        walk_eid_text(&p.destination), PyBool_FromLong(local), expires_at,
        PyBool_FromLong(hop_over), exclude,
    };
    PyObject *result = PyTuple_New(10);
    for (int i = 0; i < 8; i++) {
        if (!items[i] || !result) {
            for (int j = 0; j < 8; j++) Py_XDECREF(items[j]);
            Py_XDECREF(result);
            Py_DECREF(walked);
            return NULL;
        }
    }
    PyTuple_SET_ITEM(result, 0, Py_NewRef(PyTuple_GET_ITEM(walked, 0)));
    PyTuple_SET_ITEM(result, 1, Py_NewRef(PyTuple_GET_ITEM(walked, 1)));
    Py_DECREF(walked);
    for (int i = 0; i < 8; i++) PyTuple_SET_ITEM(result, i + 2, items[i]); /* stolen */
    return result;
}
