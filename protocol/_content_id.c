/* Content ids in C: SHA-256 (FIPS 180-4) of a message's bytes, the digest of the multihash
 * protocol/ids.py names it by (0x12, 32, digest), and of every bundle key.
 *
 * Why not hashlib: every delivered message is named twice (sealed at its source, checked
 * at its destination, spec §3), and inside a fleet run hashlib's road through OpenSSL's
 * digest objects costs five times its tight-loop figure: each call makes and frees a
 * digest context and walks the provider's method tables, cold again after the signature
 * that comes before it. This road is a few hundred bytes of code on the caller's buffer,
 * with no allocation but the result.
 *
 * Two roads give the same digest: the SHA extensions of x86 (SHA-NI) where the CPU has
 * them, and the portable FIPS 180-4 rounds everywhere else. sha256_roads() gives both, so
 * the tests hold each against hashlib and the standard's vectors on any CPU.
 *
 * Not a road for secrets: content ids name public bytes, so constant time is not needed. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_sha256.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SHA256_HAVE_NI 1
/* Set once at import (content_id_init) if the CPU has SHA-NI and SSE 4.1. */
static int sha256_ni = 0;
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

/* FIPS 180-4 §6.2.2 over ``blocks`` 64-byte blocks: the reference road. */
static void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t blocks) {
    uint32_t w[64];
    while (blocks--) {
        for (int t = 0; t < 16; t++)
            w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
                   (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K[t] + w[t];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            k = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
        p += 64;
    }
}

#ifdef SHA256_HAVE_NI
/* The same blocks with the SHA extensions: SHA256RNDS2 does two rounds on the state held as
 * (A, B, E, F) and (C, D, G, H); SHA256MSG1/MSG2 extend the message schedule four words at
 * a time (W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], §6.2.2 step 1). */
__attribute__((target("sha,sse4.1"))) static void sha256_blocks_ni(uint32_t h[8],
                                                                   const unsigned char *p,
                                                                   size_t blocks) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);        /* D C B A */
    __m128i state1 = _mm_loadu_si128((const __m128i *)&h[4]);     /* H G F E */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                            /* C D A B */
    state1 = _mm_shuffle_epi32(state1, 0x1B);                      /* E F G H */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);              /* A B E F */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);                   /* C D G H */
    while (blocks--) {
        __m128i abef = state0, cdgh = state1, w[4];
        for (int g = 0; g < 16; g++) {
            __m128i *cur = &w[g & 3];
            if (g < 4) {
                *cur = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), swap);
            } else {
                /* w[g & 3] still holds W[4g-16 .. 4g-13]; the next slot W[4g-12 ..]. */
                __m128i t = _mm_sha256msg1_epu32(*cur, w[(g + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
                *cur = _mm_sha256msg2_epu32(t, w[(g + 3) & 3]);
            }
            __m128i msg = _mm_add_epi32(*cur, _mm_loadu_si128((const __m128i *)&K[4 * g]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(msg, 0x0E));
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(state0, 0x1B);                         /* F E B A */
    state1 = _mm_shuffle_epi32(state1, 0xB1);                      /* D C H G */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);                   /* D C B A */
    state1 = _mm_alignr_epi8(state1, tmp, 8);                      /* H G F E */
    _mm_storeu_si128((__m128i *)&h[0], state0);
    _mm_storeu_si128((__m128i *)&h[4], state1);
}
#endif

typedef void (*sha256_blocks_fn)(uint32_t h[8], const unsigned char *p, size_t blocks);

/* SHA-256 of p[0:n] into out[0:32] by ``blocks_fn``, padded as §5.1.1 says. */
static void sha256_with(sha256_blocks_fn blocks_fn, const unsigned char *p, size_t n,
                        unsigned char out[32]) {
    uint32_t h[8];
    memcpy(h, H0, sizeof h);
    size_t whole = n / 64;
    blocks_fn(h, p, whole);
    unsigned char tail[128] = {0};
    size_t rest = n - whole * 64;
    memcpy(tail, p + whole * 64, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    blocks_fn(h, tail, tail_len / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

static sha256_blocks_fn sha256_best(void) {
#ifdef SHA256_HAVE_NI
    if (sha256_ni) return sha256_blocks_ni;
#endif
    return sha256_blocks_portable;
}

/* The C-level digest for the other files (_sha256.h): the best road, as sha256() takes. */
void fleetwire_sha256(const unsigned char *p, size_t n, unsigned char out[32]) {
    sha256_with(sha256_best(), p, n, out);
}

/* sha256(data) -> bytes: the 32-byte SHA-256 digest of ``data``. */
static PyObject *sha256_digest(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32);
    if (out)
        sha256_with(sha256_best(), (const unsigned char *)view.buf, (size_t)view.len,
                    (unsigned char *)PyBytes_AS_STRING(out));
    PyBuffer_Release(&view);
    return out;
}

/* sha256_roads(data) -> (portable, SHA-NI or None): the digest by each road this file has. */
static PyObject *sha256_roads(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char portable[32], hardware[32];
    sha256_with(sha256_blocks_portable, (const unsigned char *)view.buf, (size_t)view.len,
                portable);
    int have_hardware = 0;
#ifdef SHA256_HAVE_NI
    if (sha256_ni) {
        sha256_with(sha256_blocks_ni, (const unsigned char *)view.buf, (size_t)view.len,
                    hardware);
        have_hardware = 1;
    }
#endif
    PyBuffer_Release(&view);
    if (have_hardware) return Py_BuildValue("(y#y#)", portable, (Py_ssize_t)32, hardware,
                                            (Py_ssize_t)32);
    return Py_BuildValue("(y#O)", portable, (Py_ssize_t)32, Py_None);
}

static PyMethodDef content_id_methods[] = {
    {"sha256", sha256_digest, METH_O,
     "sha256(data) -> bytes: the SHA-256 digest of data (32 bytes), as hashlib gives it."},
    {"sha256_roads", sha256_roads, METH_O,
     "sha256_roads(data) -> (portable, hardware or None): SHA-256 of data by each road this "
     "module has (None where the CPU has no SHA extensions), for the tests."},
    {NULL, NULL, 0, NULL},
};

/* Called by PyInit__speedups: the CPU check, then the functions. */
int add_content_id(PyObject *m) {
#ifdef SHA256_HAVE_NI
    __builtin_cpu_init();
    sha256_ni = __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
#endif
    return PyModule_AddFunctions(m, content_id_methods);
}
