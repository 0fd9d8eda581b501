"""What a dead letter looks like: the original record plus why it failed, or, when the original
cannot fit under the size limit, a small record describing it.

A raw record may be larger than MAX_MESSAGE_BYTES (any client with a larger limit can write
one) or carry huge headers; copying it to the dead-letter topic would be refused by our own
producer and stop the processor. So the value is carried only when the whole record fits, and
any header or key too long to be a frame's is left out; the ``source`` and ``size`` headers
still say where the original is and how big it was.
"""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

# Headroom under the size limit for the record's framing and the headers added here.
RECORD_OVERHEAD_BYTES = 16 * 1024
# A frame's own headers and key are short text; anything longer is left out of a dead letter.
MAX_COPIED_FIELD_BYTES = 1024
MAX_REASON_CHARS = 500


def short_reason(error: Exception | str) -> str:
    """One line of at most MAX_REASON_CHARS: error texts may quote record contents."""
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


def dead_letter(record: ConsumerRecord, reason: str, max_message_bytes: int
                ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of the dead letter for ``record``."""
    value = record.value
    size = len(value) if value is not None else 0
    key = record.key if record.key is None or len(record.key) <= MAX_COPIED_FIELD_BYTES else None
    headers = [(name, raw) for name, raw in record.headers or ()
               if len(name) + len(raw or b"") <= MAX_COPIED_FIELD_BYTES]
    headers += [
        ("error", reason.encode()),
        ("source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ("size", str(size).encode()),
    ]
    carried = size + sum(len(name) + len(raw or b"") for name, raw in headers) + len(key or b"")
    if carried + RECORD_OVERHEAD_BYTES > max_message_bytes:
        value = None
        headers.append(("omitted", f"value of {size} bytes over MAX_MESSAGE_BYTES {max_message_bytes}".encode()))
    # A record needs a key or a value to be sent at all (kafka-python refuses neither).
    return key, value if value is not None or key is not None else b"", headers
