"""forked/huge_pages.py: a big pytest process's heap goes into huge pages
once, before its first hermetic test, and a small one's or a short run's
does not (each in a fresh interpreter: the collapse is once per process)."""

import subprocess
import sys

import pytest

PROGRAM = r'''
import sys
from pytest_hermetic.forked import huge_pages

def huge_kb():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))

ballast = [[{"n": j, "s": str(j)} for j in range(i, i + 10000)] for i in range(0, int(sys.argv[1]), 10000)]
before = huge_kb()
huge_pages.collapse_once(int(sys.argv[2]))
huge_pages.collapse_once(int(sys.argv[2]))  # once only: nothing more
print(huge_pages.anonymous_kb(), before, huge_kb())
'''

PROBE = r'''
import ctypes, mmap
from pytest_hermetic.forked import huge_pages
area = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # (a heap is private: shared memory is shmem, whose THP is another setting)
area.write(b"x" * (8 << 20))
start = (ctypes.addressof(ctypes.c_char.from_buffer(area)) + huge_pages.HUGE - 1) & ~(huge_pages.HUGE - 1)
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
print(libc.madvise(start, huge_pages.HUGE, huge_pages.MADV_COLLAPSE), ctypes.get_errno())
'''


def run(objects: int, tests: int) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(objects), str(tests)],
                         capture_output=True, text=True, check=True).stdout
    anon, before, after = map(int, out.split())
    return anon, before, after


@pytest.fixture(scope="module")
def collapse_works() -> None:
    result, errno = map(int, subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                            check=True).stdout.split())
    if result != 0:
        pytest.skip(f"this kernel refuses MADV_COLLAPSE (errno {errno}: older than 6.1, or THP set to never)")


def test_a_big_heap_goes_into_huge_pages(collapse_works):
    anon, before, after = run(600_000, 1000)  # ~150 MiB of objects
    assert anon > 100 << 10
    assert after - before > (anon - before) // 2, (anon, before, after)


def test_a_small_heap_or_a_short_run_stays(collapse_works):
    anon, before, after = run(600_000, 10)  # big, but 10 tests: not worth one copy of the heap
    assert anon > 100 << 10 and after - before < 8 << 10, (anon, before, after)
    anon, before, after = run(10_000, 1000)  # many tests, but a small heap
    assert anon < 64 << 10 and after - before < 8 << 10, (anon, before, after)
