/* py_arena — the sandbox child's arenas for CPython's object allocator:
 * 1 MiB arenas cut from 32 MiB huge-page slabs, populated ahead of use by a
 * helper thread on the other core, and up to 64 emptied ones kept for reuse
 * (first-touch page faults one by one made building the helpers' large
 * results slow; py_arena.c has the figures). Lives only in rlm-sandbox.
 *
 * Ownership: the allocator and its state live as long as the process. */
#ifndef RLM_PY_ARENA_H
#define RLM_PY_ARENA_H

/* Gives Python's object allocator these arenas and starts the populating
 * thread, which waits on a condition variable when idle, makes no Python
 * calls and blocks every signal. Call before Py_Initialize. 0, or -1 when
 * out of memory (Python's own arenas then stay; nothing else changes). */
int py_arena_install(void);

/* Starts the populating thread in this process if it has none: a process
 * forked from the one that called py_arena_install has no thread but the
 * forking one, and populates arenas itself until it calls this. Call before
 * the lockdown (which forbids new threads). Returns 0 when the thread runs,
 * -1 when none could start or the arenas are not installed (arenas are then
 * populated by the thread asking for them; nothing else changes). */
int py_arena_start_thread(void);

#endif
