"""The pytest process's heap in transparent huge pages, once, before its
first hermetic test.

Every hermetic test forks the pytest process: the fork copies its page
tables and the child's exit tears them down, one entry per 4 KiB page.  So
a pytest process that holds a big collection pays per test in proportion
to its memory (bench/parent_size.py: ~45 ms of CPU per test with 1 GiB of
objects, as much under pytest-forked).  `madvise(MADV_COLLAPSE)` (Linux
6.1+) turns the heap into 2 MiB pages, one entry each: the same parent then
costs ~10 ms per test.  It copies the heap once (~1-4 s per GiB), so it is
done only where it pays: a heap of MIN_ANON_KB and MIN_TESTS tests to run.
Where the kernel refuses (older than 6.1, THP "never") nothing changes.
"""

from __future__ import annotations

from .. import _libc as libc

MADV_COLLAPSE = 25  # <linux/mman.h>, Linux 6.1
HUGE = 2 << 20
MIN_ANON_KB = 64 << 10  # a small session's pytest is 30-40 MiB
MIN_TESTS = 200  # about where the collapse's one copy is paid back (docs/benchmarks.md)
_done = False


def collapse_once(tests: int) -> None:
    """Collapse the heap into huge pages if it is big and `tests` are many;
    at most once per process (an xdist worker does its own)."""
    global _done
    if _done:
        return
    _done = True
    if tests < MIN_TESTS or anonymous_kb() < MIN_ANON_KB:
        return
    try:
        madvise = libc.function("madvise", libc.c_int, libc.c_void_p, libc.c_size_t, libc.c_int)
    except AttributeError:  # (no such function in this libc)
        return
    for start, end in heap_ranges():
        madvise(start, end - start, MADV_COLLAPSE)  # refused: the range stays as it is


def anonymous_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def heap_ranges() -> list[tuple[int, int]]:
    """The 2 MiB-aligned parts of the private, anonymous, writable mappings
    (Python's arenas and malloc's heap), where huge pages can go."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if fields[1].startswith("rw") and fields[1][3] == "p" and (len(fields) < 6 or fields[5] == "[heap]"):
                low, high = (int(x, 16) for x in fields[0].split("-"))
                start, end = (low + HUGE - 1) & ~(HUGE - 1), high & ~(HUGE - 1)
                if end > start:
                    ranges.append((start, end))
    return ranges
