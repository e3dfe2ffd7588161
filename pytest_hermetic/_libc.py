"""libc's functions, called through `_ctypes` (ctypes' C half) directly.

`import ctypes` runs ctypes/__init__.py: ~60 classes, a cache of pointer
types and a first callback made at import, 1.3 ms of a ~24 ms `hermetic
run` (issue #16: the whole command at most runc's time), for the handful
of pieces the engine calls: typed libc functions that keep errno, a few
scalar types, structures, `byref`, `addressof` and char buffers.  Those
pieces are `_ctypes`' own types, subclassed here exactly as
ctypes/__init__.py subclasses them (a scalar type names its struct code in
`_type_`, a function pointer class its calling convention in `_flags_`, a
library is anything with a `_handle` from `dlopen`); `_ctypes` is the same
module in Python 3.10 to 3.13, and tests/test_libc.py checks each piece
against ctypes.  At the package's base: `paths` asks statfs(2) too.

Only the engine's own calls use these types: a ctypes object (`ctypes.c_int`)
is not one of them, and the other way round.
"""

from __future__ import annotations

import _ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # the same API as ctypes' own (and the same C types underneath)
    from typing import Any, Callable
    from ctypes import (Structure, addressof, byref, c_char, c_char_p, c_int, c_long, c_uint, c_uint64, c_ulong,
                        c_void_p, get_errno)
else:  # scalar types, by their struct codes (an LP64 Linux: long and size_t are 64 bits)
    c_int = type("c_int", (_ctypes._SimpleCData,), {"_type_": "i"})
    c_uint = type("c_uint", (_ctypes._SimpleCData,), {"_type_": "I"})
    c_long = type("c_long", (_ctypes._SimpleCData,), {"_type_": "l"})
    c_ulong = type("c_ulong", (_ctypes._SimpleCData,), {"_type_": "L"})
    c_uint64 = type("c_uint64", (_ctypes._SimpleCData,), {"_type_": "Q"})
    c_char = type("c_char", (_ctypes._SimpleCData,), {"_type_": "c"})
    c_char_p = type("c_char_p", (_ctypes._SimpleCData,), {"_type_": "z"})  # bytes or None in, bytes or None out
    c_void_p = type("c_void_p", (_ctypes._SimpleCData,), {"_type_": "P"})  # an address: an int, a buffer, byref(x)
    Structure = _ctypes.Structure
    byref = _ctypes.byref
    addressof = _ctypes.addressof
    get_errno = _ctypes.get_errno
c_uint32 = c_uint
c_size_t = c_ulong


class _Library:
    """What a function pointer is made from: `(name, library)`, whose
    `_handle` the C side looks the name up in (dlsym)."""

    def __init__(self) -> None:
        # dlopen(NULL): the running program and what it links, libc (ctypes.CDLL(None) does the same)
        self._handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]


_LIBRARY = _Library()


class _Function(_ctypes.CFuncPtr):
    """A C function that saves errno for `get_errno` (ctypes' `use_errno`);
    the GIL is released for the call (a mount or a fork's wait may block)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _PythonFunction(_ctypes.CFuncPtr):
    """A C function called with the GIL held (ctypes' PyDLL): fork."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO | _ctypes.FUNCFLAG_PYTHONAPI
    _restype_ = c_int


def function(name: str, restype: type, *argtypes: type, keep_gil: bool = False) -> "Callable[..., Any]":
    """libc's `name`, a function object of its own with these types (an
    argument is converted by its declared type: a Python int or bytes goes
    as it is)."""
    made = (_PythonFunction if keep_gil else _Function)((name, _LIBRARY))  # type: ignore[arg-type]
    made.restype = restype
    made.argtypes = argtypes
    return made


def char_buffer(data: bytes) -> "Any":
    """A mutable C array holding `data` (ctypes.create_string_buffer(data, len(data)))."""
    buffer = (c_char * len(data))()  # (the array type is _ctypes' own, cached per length)
    buffer.raw = data
    return buffer
