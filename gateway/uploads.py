"""A multipart upload read as it arrives and handed on part by part, never spooled whole: the
gateway's only disk is a small /tmp, and a caller may not make it hold more than one chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request


class UploadError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def too_large(limit: int) -> UploadError:
    return UploadError(
        413, "BODY_TOO_LARGE", f"the upload is larger than {limit} bytes (FLOWVIZ_MAX_UPLOAD_BYTES)"
    )


async def parts(request: Request, names: frozenset[str], limit: int) -> AsyncIterator[tuple[str, bytes]]:
    """(part name, data) of the parts named in `names`, as the body arrives; others are skipped.
    Raises UploadError for a body over `limit` bytes or one that is not multipart."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, "BODY_INVALID", "not a multipart upload: send multipart/form-data")
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large(limit)
    ready: list[tuple[str, bytes]] = []
    part: dict[str, Any] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(field=b"", value=b"", name=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        if part["field"].lower() == b"content-disposition":
            name = parse_options_header(part["value"])[1].get(b"name", b"").decode("latin-1")
            part["name"] = name if name in names else None
        part["field"] = part["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("name"):
            ready.append((part["name"], data[start:end]))

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            parser.write(chunk)
            for item in ready:
                yield item
            ready.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, "BODY_INVALID", f"not a multipart upload: {exc}") from None
    for item in ready:
        yield item
