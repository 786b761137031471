"""How a model file travels to a node: binary chunks on ``maskwatch/<site>/<node>/model/<sha256>``.

Each chunk is an 8-byte header (big-endian ``index`` and ``count``, both unsigned 32-bit) followed by
at most :data:`CHUNK_BYTES` of the file. The ``model`` command (:class:`shared.messages.ModelCommand`) names the
file's sha256 and size; the node gathers the chunks, joins them and checks both.

Example::

    >>> chunks = split(b"x" * 10, chunk_bytes=4)
    >>> [read_chunk(c)[:2] for c in chunks]
    [(0, 3), (1, 3), (2, 3)]
    >>> b"".join(read_chunk(c)[2] for c in chunks) == b"x" * 10
    True
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from shared.errors import ContractError

#: Largest model file a node accepts (bytes): the committed f16 classifier is about 4.8 MB.
MAX_MODEL_BYTES: Final = 32 * 1024 * 1024
#: Bytes of file per chunk: well under Mosquitto's ``max_packet_size`` (4 MiB in deploy/mosquitto).
CHUNK_BYTES: Final = 256 * 1024
_HEADER: Final = struct.Struct(">II")


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data``, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many chunks a file of ``size`` bytes travels in (at least one)."""
    return max(1, -(-size // chunk_bytes))


def split(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """The chunk payloads of ``data``, header included."""
    count = chunk_count(len(data), chunk_bytes)
    return [_HEADER.pack(i, count) + data[i * chunk_bytes : (i + 1) * chunk_bytes] for i in range(count)]


def read_chunk(payload: bytes) -> tuple[int, int, bytes]:
    """``(index, count, data)`` of one chunk payload, or :class:`ContractError`."""
    if len(payload) < _HEADER.size:
        raise ContractError(f"model chunk of {len(payload)} bytes has no header", reason="schema")
    index, count = _HEADER.unpack_from(payload)
    if count < 1 or index >= count or count > chunk_count(MAX_MODEL_BYTES):
        raise ContractError(f"model chunk {index} of {count} is out of range", reason="schema")
    if len(payload) - _HEADER.size > CHUNK_BYTES:
        raise ContractError(f"model chunk of {len(payload)} bytes exceeds {CHUNK_BYTES} + header", reason="oversize")
    return index, count, payload[_HEADER.size :]
