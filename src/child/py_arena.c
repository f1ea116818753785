/* py_arena — the arenas of CPython's object allocator for the sandbox
 * child: cut from huge-page slabs, populated ahead of use by a helper
 * thread, and kept for reuse when emptied (the design note below).
 * Unrelated to what model code calls; it makes building the helpers'
 * large results (grep's hits) cheap. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "py_arena.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Python's object allocator takes memory in 1 MiB arenas, touches it page
 * by page and unmaps an arena as soon as it is empty. On the virtual
 * machine we measured (bench/helpers_bench.sh) the first touch of a 4 KiB
 * page costs 10-20 us, and still 5-7 us when mmap has populated it;
 * grep()'s 100,000 hits fill about 9,000 pages: longer than PCRE2's scan
 * of 400 MB. Three things make fresh arenas cheaper:
 *
 * - Arenas are cut from SLAB_SIZE slabs aligned to 2 MiB and advised
 *   MADV_HUGEPAGE, so one fault backs two arenas: populating and touching
 *   64 MiB took 4-240 ms there in huge pages against 140-410 ms in 4 KiB
 *   pages (the slow huge-page cases are the hypervisor backing memory it
 *   had taken back). The kernel backs a whole huge page, so at most one
 *   MiB more is resident than asked, at the slab's frontier.
 * - A helper thread populates (MADV_POPULATE_WRITE) the AHEAD bytes beyond
 *   the last arena handed out, on the other core, so a burst of
 *   allocation, such as building a large result, finds part of its memory
 *   ready and the rest being readied alongside. It is advice only: an arena
 *   the helper has not finished is populated by arena_alloc itself, and a
 *   range unmapped meanwhile makes its call fail harmlessly. It makes no
 *   Python calls and holds no lock while it works.
 * - Up to ARENA_KEEP emptied arenas are kept for reuse instead of being
 *   unmapped, so results built after others were dropped, as in any
 *   session that calls grep() more than once, land in memory already
 *   mapped: at most ARENA_KEEP MiB stay mapped unused.
 *
 * Where huge pages are off the advice does nothing and arenas are
 * populated in 4 KiB pages. Without the helper (none could start, or this
 * process is a fork of the one that started it and has not started its
 * own with py_arena_start_thread) arena_alloc populates each arena
 * itself. Python calls the allocator under the GIL, so only what the
 * helper shares is locked. Other sizes (CPython's frame-stack chunks), and
 * arenas when no slab fits under the address-space limit, get their own
 * populated mapping. */
#define ARENA_KEEP 64
#define HUGE_PAGE ((size_t)2 << 20)
#define SLAB_SIZE ((size_t)32 << 20)
#define AHEAD ((size_t)2 << 20)

typedef struct arena_cache {
    void *kept[ARENA_KEEP];
    size_t size[ARENA_KEEP];
    size_t n;
    char *slab;                 /* where the next arena is cut, or NULL */
    size_t slab_left;           /* bytes left from there */
    int helper;                 /* the populating thread runs, */
    pid_t owner;                /* in this process (a fork copies no thread) */
    pthread_mutex_t lock;       /* guards the three fields below */
    pthread_cond_t wake;
    unsigned slab_no;           /* counts slabs */
    uintptr_t ahead_from, ahead_to;   /* what the helper populates next */
    _Atomic(uintptr_t) ready_to; /* the helper has populated the slab from the
                                    next arena up to here */
} arena_cache;

/* size bytes of fresh address space aligned to HUGE_PAGE, advised for huge
 * pages; NULL when out of address space. */
static char *huge_map(size_t size)
{
    char *raw = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uintptr_t at = ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    char *p = raw + (at - (uintptr_t)raw);
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    munmap(p + size, HUGE_PAGE - (size_t)(p - raw));
    madvise(p, size, MADV_HUGEPAGE);
    return p;
}

/* Failing (a kernel before 5.14) leaves page faults on first touch. */
static void populate(void *p, size_t size)
{
    madvise(p, size, MADV_POPULATE_WRITE);
}

static void *populate_main(void *arg)
{
    arena_cache *cache = arg;
    pthread_mutex_lock(&cache->lock);
    for (;;) {
        while (cache->ahead_from >= cache->ahead_to)
            pthread_cond_wait(&cache->wake, &cache->lock);
        uintptr_t from = cache->ahead_from;
        size_t step = cache->ahead_to - from < HUGE_PAGE ? cache->ahead_to - from : HUGE_PAGE;
        unsigned slab_no = cache->slab_no;
        cache->ahead_from = from + step;
        pthread_mutex_unlock(&cache->lock);
        populate((void *)from, step);
        pthread_mutex_lock(&cache->lock);
        if (cache->slab_no == slab_no)
            atomic_store(&cache->ready_to, from + step);
    }
    return NULL;
}

/* Cuts size bytes from the current slab (a new one when it is used up),
 * populated, and sends the helper on to AHEAD bytes beyond them. NULL when
 * a new slab cannot be mapped. */
static void *slab_cut(arena_cache *cache, size_t size)
{
    if (cache->helper && cache->owner != getpid())
        cache->helper = 0;   /* a forked copy: the thread stayed behind */
    if (cache->slab_left < size) {
        if (cache->slab_left)
            munmap(cache->slab, cache->slab_left);
        cache->slab = huge_map(SLAB_SIZE);
        cache->slab_left = cache->slab ? SLAB_SIZE : 0;
        if (!cache->slab)
            return NULL;
        if (cache->helper) {
            pthread_mutex_lock(&cache->lock);
            cache->slab_no++;
            cache->ahead_from = cache->ahead_to = (uintptr_t)cache->slab;
            atomic_store(&cache->ready_to, (uintptr_t)cache->slab);
            pthread_mutex_unlock(&cache->lock);
        }
    }
    char *p = cache->slab;
    cache->slab += size;
    cache->slab_left -= size;
    if (!cache->helper || atomic_load(&cache->ready_to) < (uintptr_t)cache->slab)
        populate(p, size);
    if (cache->helper) {
        pthread_mutex_lock(&cache->lock);
        if (cache->ahead_from < (uintptr_t)cache->slab)
            cache->ahead_from = (uintptr_t)cache->slab;
        size_t ahead = cache->slab_left < AHEAD ? cache->slab_left : AHEAD;
        cache->ahead_to = (uintptr_t)cache->slab + ahead;
        pthread_cond_signal(&cache->wake);
        pthread_mutex_unlock(&cache->lock);
    }
    return p;
}

static void *arena_alloc(void *ctx, size_t size)
{
    arena_cache *cache = ctx;
    for (size_t i = cache->n; i-- > 0;)
        if (cache->size[i] == size) {
            void *p = cache->kept[i];
            cache->n--;
            cache->kept[i] = cache->kept[cache->n];
            cache->size[i] = cache->size[cache->n];
            return p;
        }
    /* An arena (a power of two, so the slab's pieces stay aligned); near
     * the address-space limit, where no slab fits, it is mapped alone. */
    if (size >= 64 * 1024 && size <= SLAB_SIZE / 4 && (size & (size - 1)) == 0) {
        void *p = slab_cut(cache, size);
        if (p)
            return p;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    arena_cache *cache = ctx;
    if (cache->n < ARENA_KEEP) {
        cache->kept[cache->n] = ptr;
        cache->size[cache->n] = size;
        cache->n++;
        return;
    }
    munmap(ptr, size);   /* a piece of a slab is unmapped alone */
}

/* Starts the helper thread, with every signal blocked so that SIGINT
 * reaches the main thread. Returns 0 when it runs. */
static int start_populate_helper(arena_cache *cache)
{
    cache->helper = 0;
    if (pthread_mutex_init(&cache->lock, NULL) != 0 || pthread_cond_init(&cache->wake, NULL) != 0)
        return -1;
    cache->ahead_from = cache->ahead_to = 0;
    atomic_store(&cache->ready_to, 0);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, populate_main, cache);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return -1;
    cache->helper = 1;
    cache->owner = getpid();
    return 0;
}

int py_arena_install(void)
{
    /* The cache lives as long as the process, like the allocator using it. */
    arena_cache *cache = calloc(1, sizeof *cache);
    if (!cache)
        return -1;
    start_populate_helper(cache);
    PyObjectArenaAllocator arenas = {.ctx = cache, .alloc = arena_alloc, .free = arena_free};
    PyObject_SetArenaAllocator(&arenas);
    return 0;
}

int py_arena_start_thread(void)
{
    PyObjectArenaAllocator arenas;
    PyObject_GetArenaAllocator(&arenas);
    if (arenas.alloc != arena_alloc)
        return -1;
    arena_cache *cache = arenas.ctx;
    if (cache->helper && cache->owner == getpid())
        return 0;
    return start_populate_helper(cache);
}
