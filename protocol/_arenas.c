/* Huge pages for a large simulation's heap: pymalloc's arenas and the middle-sized blocks.
 *
 * Why: a fleet of 10,000 agents keeps some 450 MiB of Python objects (records, tombstones,
 * dicts, the agents themselves), and every message touches three or four agents' worth of
 * them at random. In 4 KiB pages almost every one of those touches misses the TLB as well as
 * the cache: the processor walks the page tables, whose own entries miss too. With the same
 * objects in transparent huge pages a TLB entry covers 512 times as much.
 *
 * What: two address ranges are reserved at install (PROT_NONE, no memory behind them), each
 * aligned to 2 MiB; they are made readable and writable a region at a time as they fill, and
 * each region is marked MADV_HUGEPAGE (the kernel backs it with huge pages when it has them;
 * when it has not, the memory is ordinary and nothing else changes).
 *
 * - Arenas: CPython's small-object allocator (objects up to 512 bytes) takes its arenas from
 *   an arena allocator a program may replace (PyObject_SetArenaAllocator, "Customize pymalloc
 *   Arena Allocator" in the C API docs). Ours hands out arenas from the first range in order.
 * - Middle-sized blocks: anything larger than pymalloc takes (a dict's table, a list's items,
 *   a bundle's bytes) goes to the C library's malloc, in ordinary pages. The MEM and OBJ
 *   domains' allocators (PyMem_SetAllocator; both are only called with the GIL held) are
 *   wrapped: a request of 513 bytes to 32 MiB is served from the second range, in size
 *   classes four to a power of two (at most a quarter wasted), each block behind a 16-byte
 *   header naming its class; everything else, and every pointer not in the range, goes to
 *   the allocator that was there before, so what was allocated before install is freed where
 *   it came from.
 *
 * Memory given back (a freed block, an arena pymalloc empties) is kept on a free list for the
 * next request of its size rather than returned to the system: unmapping a piece would split
 * its huge page, and a simulation's heap grows to its peak once. So this is for a program
 * whose heap is one large working set (the simulator, the fleet benchmark), installed at its
 * start, not for a library to install behind its caller's back. Off Linux, or without
 * MADV_HUGEPAGE, install() changes nothing and answers False; if a range cannot be reserved
 * or made writable, requests go to the previous allocators as before. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MAP_NORESERVE) && SIZEOF_VOID_P == 8
#define HAVE_HUGE_ARENAS 1
#define HUGE_PAGE ((size_t)2 << 20)
#define RESERVE ((size_t)64 << 30) /* address space per range: 64 GiB, no memory behind it */
#define SMALL 512                  /* the largest request pymalloc serves itself */
#define HEADER 16                  /* before each middle-sized block: its class; keeps alignment */
#define MIN_BITS 9                 /* classes start above 2**9 */
#define MAX_BITS 25                /* and end at 2**25 (32 MiB) */
#define CLASSES ((MAX_BITS - MIN_BITS) * 4)

typedef struct {
    char *base, *end;   /* the reservation */
    char *writable;     /* [base, writable) is readable and writable, in whole regions */
    char *cursor;       /* [base, cursor) has been handed out */
} Range;

static int installed;
static size_t region_size; /* bytes made writable at a time, a multiple of HUGE_PAGE */
static Range arenas, blocks;
static PyObjectArenaAllocator replaced_arenas;
static PyMemAllocatorEx replaced_mem, replaced_obj;
static size_t arena_size;   /* the size pymalloc asks for (the first request's) */
static void *free_arenas;   /* arenas given back: each one's first word links the next */
static void *free_blocks[CLASSES];
static Py_ssize_t arenas_out, arenas_kept, blocks_out, blocks_kept;
static Py_ssize_t advised; /* bytes the kernel took the huge-page advice for */

static int reserve(Range *range) {
    char *raw = mmap(NULL, RESERVE + HUGE_PAGE, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return 0;
    char *base = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw));
    char *end = base + RESERVE;
    if (raw + RESERVE + HUGE_PAGE > end) munmap(end, (size_t)(raw + RESERVE + HUGE_PAGE - end));
    range->base = range->writable = range->cursor = base;
    range->end = end;
    return 1;
}

/* size bytes from the range (size a multiple of 16), or NULL when it cannot grow. */
static void *carve(Range *range, size_t size) {
    if ((size_t)(range->end - range->cursor) < size) return NULL;
    while ((size_t)(range->writable - range->cursor) < size) {
        if (mprotect(range->writable, region_size, PROT_READ | PROT_WRITE) != 0) return NULL;
        /* Advice only: refused, the region is ordinary memory and still serves. */
        if (madvise(range->writable, region_size, MADV_HUGEPAGE) == 0)
            advised += (Py_ssize_t)region_size;
        range->writable += region_size;
    }
    void *out = range->cursor;
    range->cursor += size;
    return out;
}

/* --- arenas ------------------------------------------------------------------------------ */

static void *arena_alloc(void *ctx, size_t size) {
    if (arena_size == 0) arena_size = size;
    if (size == arena_size) {
        void *arena = free_arenas;
        if (arena != NULL) {
            free_arenas = *(void **)arena;
            arenas_kept--;
        } else {
            arena = carve(&arenas, size);
        }
        if (arena != NULL) {
            arenas_out++;
            return arena;
        }
    }
    return replaced_arenas.alloc(replaced_arenas.ctx, size);
}

static void arena_free(void *ctx, void *ptr, size_t size) {
    char *p = (char *)ptr;
    if (p >= arenas.base && p < arenas.end) {
        *(void **)ptr = free_arenas; /* pymalloc is done with it: its first word is ours */
        free_arenas = ptr;
        arenas_out--;
        arenas_kept++;
        return;
    }
    replaced_arenas.free(replaced_arenas.ctx, ptr, size);
}

/* --- middle-sized blocks ------------------------------------------------------------------ */

/* The class of a request of size bytes (SMALL < size <= 2**MAX_BITS), and its capacity: four
 * classes to a power of two, so a block wastes at most a quarter. */
static int class_of(size_t size, size_t *capacity) {
    size_t n = size - 1;
    int bits = 63 - __builtin_clzll((unsigned long long)n); /* n in [2**bits, 2**(bits+1)) */
    size_t quarter = (size_t)1 << (bits - 2);
    size_t q = (n >> (bits - 2)) & 3;
    *capacity = ((size_t)1 << bits) + (q + 1) * quarter;
    return (bits - MIN_BITS) * 4 + (int)q;
}

static size_t capacity_of_class(int cls) {
    int bits = cls / 4 + MIN_BITS;
    return ((size_t)1 << bits) + (size_t)(cls % 4 + 1) * ((size_t)1 << (bits - 2));
}

static inline int is_block(void *ptr) {
    return (char *)ptr >= blocks.base && (char *)ptr < blocks.end;
}

/* A block for size bytes, or NULL (the caller asks the previous allocator). */
static void *block_alloc(size_t size) {
    size_t capacity;
    int cls = class_of(size, &capacity);
    char *block = free_blocks[cls];
    if (block != NULL) {
        free_blocks[cls] = *(void **)block;
        blocks_kept--;
    } else {
        char *start = carve(&blocks, HEADER + capacity);
        if (start == NULL) return NULL;
        *(int64_t *)start = cls;
        block = start + HEADER;
    }
    blocks_out++;
    return block;
}

static void block_free(void *ptr) {
    int cls = (int)*(int64_t *)((char *)ptr - HEADER);
    *(void **)ptr = free_blocks[cls];
    free_blocks[cls] = ptr;
    blocks_out--;
    blocks_kept++;
}

#define MIDDLE(size) ((size) > SMALL && (size) <= ((size_t)1 << MAX_BITS))

static void *wrapped_malloc(void *ctx, size_t size) {
    if (MIDDLE(size)) {
        void *block = block_alloc(size);
        if (block != NULL) return block;
    }
    PyMemAllocatorEx *replaced = ctx;
    return replaced->malloc(replaced->ctx, size);
}

static void *wrapped_calloc(void *ctx, size_t count, size_t size) {
    if (size != 0 && count <= ((size_t)1 << MAX_BITS) / size && MIDDLE(count * size)) {
        void *block = block_alloc(count * size);
        if (block != NULL) {
            memset(block, 0, count * size); /* a kept block holds what it held */
            return block;
        }
    }
    PyMemAllocatorEx *replaced = ctx;
    return replaced->calloc(replaced->ctx, count, size);
}

static void *wrapped_realloc(void *ctx, void *ptr, size_t size) {
    PyMemAllocatorEx *replaced = ctx;
    if (ptr == NULL) return wrapped_malloc(ctx, size);
    if (!is_block(ptr)) {
        char *p = (char *)ptr;
        if (MIDDLE(size) && p >= arenas.base && p < arenas.cursor) {
            /* A pymalloc block (a list outgrowing 512 bytes): pymalloc would move it to the
             * C library's malloc, so it is moved here instead. It held at most SMALL bytes;
             * what lies beyond it up to SMALL is in the same writable range and harmless. */
            void *moved = block_alloc(size);
            if (moved != NULL) {
                size_t room = (size_t)(arenas.writable - p);
                memcpy(moved, ptr, room < SMALL ? room : SMALL);
                replaced->free(replaced->ctx, ptr);
                return moved;
            }
        }
        return replaced->realloc(replaced->ctx, ptr, size);
    }
    size_t capacity = capacity_of_class((int)*(int64_t *)((char *)ptr - HEADER));
    if (size <= capacity) return ptr; /* it still fits (shrinking keeps the block) */
    void *moved = wrapped_malloc(ctx, size);
    if (moved == NULL) return NULL; /* the old block stands, as realloc's contract says */
    memcpy(moved, ptr, capacity);
    block_free(ptr);
    return moved;
}

static void wrapped_free(void *ctx, void *ptr) {
    if (ptr == NULL) return;
    if (is_block(ptr)) {
        block_free(ptr);
        return;
    }
    PyMemAllocatorEx *replaced = ctx;
    replaced->free(replaced->ctx, ptr);
}
#endif

/* install(region_mib) -> bool */
static PyObject *arenas_install(PyObject *self, PyObject *arg) {
    long mib = PyLong_AsLong(arg);
    if (mib == -1 && PyErr_Occurred()) return NULL;
    if (mib < 2 || mib % 2 || mib > 1024) {
        PyErr_SetString(PyExc_ValueError, "region size must be an even number of MiB, 2 to 1024");
        return NULL;
    }
#ifdef HAVE_HUGE_ARENAS
    if (installed) Py_RETURN_TRUE; /* once per process: the first size stands */
    if (!reserve(&arenas)) Py_RETURN_FALSE;
    if (!reserve(&blocks)) {
        munmap(arenas.base, RESERVE);
        Py_RETURN_FALSE;
    }
    region_size = (size_t)mib << 20;
    PyObject_GetArenaAllocator(&replaced_arenas);
    PyObjectArenaAllocator ours = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&ours);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &replaced_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &replaced_obj);
    PyMemAllocatorEx mem = {&replaced_mem, wrapped_malloc, wrapped_calloc, wrapped_realloc,
                            wrapped_free};
    PyMemAllocatorEx obj = {&replaced_obj, wrapped_malloc, wrapped_calloc, wrapped_realloc,
                            wrapped_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    installed = 1;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* stats() -> (installed, arena bytes writable, block bytes writable, arenas out, arenas kept,
 * blocks out, blocks kept, bytes advised) */
static PyObject *arenas_stats(PyObject *self, PyObject *unused) {
#ifdef HAVE_HUGE_ARENAS
    return Py_BuildValue("(Onnnnnnn)", installed ? Py_True : Py_False,
                         (Py_ssize_t)(arenas.writable - arenas.base),
                         (Py_ssize_t)(blocks.writable - blocks.base), arenas_out, arenas_kept,
                         blocks_out, blocks_kept, advised);
#else
    return Py_BuildValue("(Onnnnnnn)", Py_False, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0,
                         (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0);
#endif
}

/* ranges() -> [(start, end)] * 2: the arenas' and the blocks' reservations ([] if none) */
static PyObject *arenas_ranges(PyObject *self, PyObject *unused) {
#ifdef HAVE_HUGE_ARENAS
    if (installed)
        return Py_BuildValue("[(KK)(KK)]", (unsigned long long)(uintptr_t)arenas.base,
                             (unsigned long long)(uintptr_t)arenas.end,
                             (unsigned long long)(uintptr_t)blocks.base,
                             (unsigned long long)(uintptr_t)blocks.end);
#endif
    return PyList_New(0);
}

static PyMethodDef arena_methods[] = {
    {"huge_arenas_install", arenas_install, METH_O,
     "huge_arenas_install(region_mib) -> bool: from now on, take pymalloc's arenas and blocks "
     "of 513 bytes to 32 MiB from ranges made writable region_mib MiB at a time and marked "
     "for transparent huge pages (False: not on this system; nothing changed). Once per "
     "process; what is given back is kept for reuse."},
    {"huge_arenas_stats", arenas_stats, METH_NOARGS,
     "huge_arenas_stats() -> (installed, arena bytes, block bytes, arenas out, arenas kept, "
     "blocks out, blocks kept, bytes the kernel took the huge-page advice for)"},
    {"huge_arenas_ranges", arenas_ranges, METH_NOARGS,
     "huge_arenas_ranges() -> [(start, end), (start, end)]: the arenas' and the blocks' "
     "address ranges ([] before install)"},
    {NULL, NULL, 0, NULL},
};

/* Called by PyInit__speedups. */
int add_arenas(PyObject *m) { return PyModule_AddFunctions(m, arena_methods); }
