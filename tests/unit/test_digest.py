"""images/digest.py: the one content path (digests of bytes and files, the hashing streams).
No root, no kernel; checked against hashlib directly."""

from __future__ import annotations

import hashlib
import io

from pytest_hermetic.errors import ContentError, DigestMismatch, RegistryDigestMismatch, RegistryError
from pytest_hermetic.images.digest import HashingReader, HashingWriter, sha256_digest, sha256_file

DATA = bytes(range(256)) * 5000  # more than one 1 MiB read
WANT = "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_digests_of_bytes_and_files(tmp_path):
    assert sha256_digest(DATA) == WANT
    assert sha256_digest(b"") == "sha256:" + hashlib.sha256(b"").hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    assert sha256_file(str(path)) == WANT


def test_reader_hashes_and_counts_what_passes():
    reader = HashingReader(io.BytesIO(DATA))
    assert reader.read(10) == DATA[:10]
    reader.drain()
    assert (reader.digest(), reader.size) == (WANT, len(DATA))
    assert reader.read(1) == b"" and reader.size == len(DATA)


def test_writer_hashes_counts_and_writes_through():
    out = io.BytesIO()
    writer = HashingWriter(out)
    for i in range(0, len(DATA), 4096):
        assert writer.write(DATA[i:i + 4096]) == len(DATA[i:i + 4096])
    writer.flush()
    assert out.getvalue() == DATA
    assert (writer.digest(), writer.size, writer.tell()) == (WANT, len(DATA), len(DATA))


def test_a_mismatch_is_a_content_error_and_a_registry_one_is_a_registry_error_too():
    assert issubclass(DigestMismatch, ContentError) and not issubclass(DigestMismatch, RegistryError)
    assert issubclass(RegistryDigestMismatch, DigestMismatch) and issubclass(RegistryDigestMismatch, RegistryError)
