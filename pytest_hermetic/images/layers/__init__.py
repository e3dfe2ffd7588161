"""OCI layer tarballs <-> overlayfs layer directories.

`extract_layer` unpacks a layer so the folder can be given to overlayfs as a
lower (or upper) directory: OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``)
become overlayfs whiteouts (a 0/0 character device, an ``opaque`` xattr).
`write_layer_from_upper` does the reverse for `commit`, and
`write_layer_from_dir` tars a plain root filesystem folder.

One module each, in the order bytes travel:
  decompress  blob -> uncompressed tar (sniffed: gzip, zstd, xz, bzip2, plain)
  tarstream   tar -> members, a truncated or corrupt tar as one LayerError
  extract     members -> files under a root fd, trusting nothing (the hostile-input checks)
  pipelined   the same in two threads (read and parse | make files)
  erofs       members -> one EROFS image instead of files (erofs_format: its on-disk layout)
  writer      folder -> deterministic tar (commit, `dir:` import)
  format      the names both directions share (whiteouts, overlay xattrs)
"""

from .decompress import media_type, open_layer, open_layer_stream
from .extract import ExtractStats, extract_layer
from .format import OVERLAY_TRUSTED, OVERLAY_USER, is_whiteout
from .writer import LayerDigests, write_layer_from_dir, write_layer_from_upper

__all__ = [
    "OVERLAY_TRUSTED",
    "OVERLAY_USER",
    "ExtractStats",
    "LayerDigests",
    "extract_layer",
    "is_whiteout",
    "media_type",
    "open_layer",
    "open_layer_stream",
    "write_layer_from_dir",
    "write_layer_from_upper",
]
