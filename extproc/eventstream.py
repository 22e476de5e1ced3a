"""AWS event stream (``application/vnd.amazon.eventstream``): incremental decoder and encoder.

Bedrock's ConverseStream answers with a sequence of binary messages. Each one is::

    total length (u32) | headers length (u32) | prelude CRC32 (u32) | headers | payload | CRC32

Integers are big-endian. The prelude CRC covers the first 8 bytes, the message CRC everything
before it. A header is its name length (u8), the UTF-8 name, a type byte and the value.

Envoy hands us the body in chunks whose boundaries have nothing to do with message boundaries,
so :class:`EventStreamDecoder` keeps the incomplete tail between :meth:`~EventStreamDecoder.feed`
calls. Both CRCs are checked: a corrupted length must not make us wait forever for bytes that
never come, and a corrupted payload must not reach a client as if it were real output.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

__all__ = [
    "EventStreamDecoder",
    "EventStreamError",
    "HeaderValue",
    "Int8",
    "Int16",
    "Int64",
    "Message",
    "encode_message",
]


class Int8(int):
    """A header integer sent as one byte (type 2); plain ``int`` is sent as 32 bits."""


class Int16(int):
    """A header integer sent as two bytes (type 3)."""


class Int64(int):
    """A header integer sent as eight bytes (type 5)."""


HeaderValue = bool | int | str | bytes | datetime | UUID

_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_U16 = struct.Struct(">H")
_TIMESTAMP = struct.Struct(">q")
_PRELUDE_LEN = _PRELUDE.size
_OVERHEAD = _PRELUDE_LEN + _CRC.size
# The limits AWS documents for event streams (16 MiB payload, 128 KiB headers); anything larger
# is a corrupted length, and buffering it would let a broken upstream exhaust memory.
MAX_HEADERS_LENGTH = 128 * 1024
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024 + MAX_HEADERS_LENGTH + _OVERHEAD

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

_TRUE, _FALSE, _BYTE, _SHORT, _INT, _LONG, _BYTES, _STRING, _TIME, _UUID = range(10)
_INTEGERS: dict[int, tuple[struct.Struct, type[int]]] = {
    _BYTE: (struct.Struct(">b"), Int8),
    _SHORT: (struct.Struct(">h"), Int16),
    _INT: (struct.Struct(">i"), int),
    _LONG: (struct.Struct(">q"), Int64),
}
_INTEGER_TYPES = {cls: (code, fmt) for code, (fmt, cls) in _INTEGERS.items()}


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad CRC, impossible length, bad header)."""


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes


class EventStreamDecoder:
    """Turns arbitrary chunks of an event stream into complete :class:`Message` objects.

    After an :class:`EventStreamError` the stream cannot be resynchronised (there is no frame
    marker), so the caller must stop feeding.
    """

    __slots__ = ("_buffer", "_length")

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Total length of the message at the head of the buffer, once its prelude is verified.
        self._length = 0

    @property
    def pending(self) -> int:
        """Bytes held back because they are only part of a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        offset = 0
        while True:
            if not self._length:
                if len(buffer) - offset < _PRELUDE_LEN:
                    break
                self._length = _check_prelude(buffer, offset)
            end = offset + self._length
            if len(buffer) < end:
                break
            messages.append(_decode(memoryview(buffer)[offset:end]))
            offset = end
            self._length = 0
        # Compact once per feed, not once per message: a chunk may hold hundreds of messages.
        del buffer[:offset]
        return messages


def _check_prelude(buffer: bytearray, offset: int) -> int:
    total, headers_length, crc = _PRELUDE.unpack_from(buffer, offset)
    if zlib.crc32(buffer[offset : offset + 8]) != crc:
        raise EventStreamError("event stream prelude CRC mismatch")
    if not _OVERHEAD <= total <= MAX_MESSAGE_LENGTH:
        raise EventStreamError(f"event stream message length {total} out of range")
    if headers_length > min(total - _OVERHEAD, MAX_HEADERS_LENGTH):
        raise EventStreamError(f"event stream headers length {headers_length} out of range")
    return int(total)


def _decode(frame: memoryview) -> Message:
    (crc,) = _CRC.unpack_from(frame, len(frame) - _CRC.size)
    if zlib.crc32(frame[: -_CRC.size]) != crc:
        raise EventStreamError("event stream message CRC mismatch")
    (headers_length,) = _CRC.unpack_from(frame, 4)
    headers_end = _PRELUDE_LEN + headers_length
    headers = _decode_headers(frame[_PRELUDE_LEN:headers_end])
    return Message(headers, bytes(frame[headers_end : -_CRC.size]))


def _decode_headers(data: memoryview) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(data):
            name_end = pos + 1 + data[pos]
            name = str(data[pos + 1 : name_end], "utf-8")
            kind = data[name_end]
            pos = name_end + 1
            value: HeaderValue
            if kind in (_TRUE, _FALSE):
                value = kind == _TRUE
            elif kind in _INTEGERS:
                fmt, cls = _INTEGERS[kind]
                value = cls(fmt.unpack_from(data, pos)[0])
                pos += fmt.size
            elif kind in (_BYTES, _STRING):
                (length,) = _U16.unpack_from(data, pos)
                raw = bytes(data[pos + 2 : pos + 2 + length])
                if len(raw) != length:
                    raise EventStreamError("event stream header value truncated")
                value = raw.decode() if kind == _STRING else raw
                pos += 2 + length
            elif kind == _TIME:
                value = _EPOCH + _TIMESTAMP.unpack_from(data, pos)[0] * _MILLISECOND
                pos += _TIMESTAMP.size
            elif kind == _UUID:
                if pos + 16 > len(data):
                    raise EventStreamError("event stream header value truncated")
                value = UUID(bytes=bytes(data[pos : pos + 16]))
                pos += 16
            else:
                raise EventStreamError(f"unknown event stream header type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise EventStreamError(f"malformed event stream header: {exc}") from None
    return headers


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One complete event stream message."""
    encoded = b"".join(_encode_header(name, value) for name, value in headers.items())
    if len(encoded) > MAX_HEADERS_LENGTH:
        raise ValueError("event stream headers too long")
    total = _OVERHEAD + len(encoded) + len(payload)
    if total > MAX_MESSAGE_LENGTH:
        raise ValueError("event stream message too long")
    lengths = struct.pack(">II", total, len(encoded))
    body = lengths + _CRC.pack(zlib.crc32(lengths)) + encoded + payload
    return body + _CRC.pack(zlib.crc32(body))


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode()
    if not 0 < len(raw_name) < 256:
        raise ValueError(f"event stream header name must be 1-255 bytes: {name!r}")
    head = bytes([len(raw_name)]) + raw_name
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return head + bytes([_TRUE if value else _FALSE])
    if isinstance(value, int):
        code, fmt = _INTEGER_TYPES.get(type(value), _INTEGER_TYPES[int])
        try:
            return head + bytes([code]) + fmt.pack(value)
        except struct.error:
            raise ValueError(f"event stream header {name!r}: {value} does not fit") from None
    if isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        if len(raw) > 0xFFFF:
            raise ValueError(f"event stream header {name!r} value too long")
        code = _STRING if isinstance(value, str) else _BYTES
        return head + bytes([code]) + _U16.pack(len(raw)) + raw
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"event stream header {name!r}: timestamp needs a time zone")
        return head + bytes([_TIME]) + _TIMESTAMP.pack((value - _EPOCH) // _MILLISECOND)
    return head + bytes([_UUID]) + value.bytes
