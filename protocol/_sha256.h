/* SHA-256 (FIPS 180-4) for the other C files of the accelerator, defined in
 * protocol/_content_id.c: the same road (SHA-NI or portable) as its sha256(), without a
 * Python call or a bytes object. The walk of received bundles (_speedups.c,
 * walk_bundle_facts) names each payload by it on every hop. */
#ifndef FLEETWIRE_SHA256_H
#define FLEETWIRE_SHA256_H

#include <stddef.h>

/* The SHA-256 digest of p[0:n] into out[0:32]. Valid once the module is imported (the
 * CPU check runs in add_content_id). */
void fleetwire_sha256(const unsigned char *p, size_t n, unsigned char out[32]);

#endif
