"""Reading a posted body within a byte limit, before and after Content-Encoding."""

from __future__ import annotations

from fastapi import Request

from shadoweval.exceptions import PayloadTooLarge
from shadoweval.ingest.parsing import decode_content


async def read_body_within(
    request: Request, limit: int, *, advice: str = "split the batch"
) -> bytes:
    """The decoded body, or PayloadTooLarge naming the limit as soon as it is exceeded."""
    too_large = PayloadTooLarge(
        f"body exceeds the limit of {limit} bytes per request; {advice}", limit_bytes=limit
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return decode_content(
        b"".join(chunks), request.headers.get("content-encoding"), max_bytes=limit
    )
