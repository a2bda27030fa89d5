"""JSON <-> protobuf for the gateway, and the JSON Schema of each message, by one set of rules.

- enums are lower-case names without their type prefix (DECISION_HOLD -> "hold");
- Timestamps are RFC 3339 strings; unset message fields and proto3 `optional` are null;
- int64 stays a JSON number; unknown or mistyped fields are a 400 naming the field.

Plans are compiled once per message type, so converting a hot message costs a loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_INTS = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
}  # fmt: skip
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_INT32_MAX = 2**31 - 1


class JsonInputError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _prefix(enum: EnumDescriptor) -> str:
    # DecisionKind -> DECISION_KIND_
    name = enum.name
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper() + "_"


@cache
def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    prefix = _prefix(enum)
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.values}


@cache
def enum_values(enum: EnumDescriptor) -> dict[str, int]:
    return {name: number for number, name in enum_names(enum).items() if number != 0}


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)


# --- protobuf -> JSON ------------------------------------------------------------------------

Plan = list[tuple[str, Callable[[Message], Any]]]


@cache
def _plan(descriptor: Descriptor) -> Plan:
    """(JSON name, getter) per field; `x_json` string fields are emitted parsed, as `x`."""
    return [(json_name(field), _getter(field)) for field in descriptor.fields]


def json_name(field: Any) -> str:
    name: str = field.name
    return name.removesuffix("_json") if field.type == FieldDescriptor.TYPE_STRING else name


_EPOCH = datetime(1970, 1, 1)
_SECONDS_MIN, _SECONDS_MAX = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31, as protobuf's
_MINUTES: dict[int, str] = {}  # minute since the epoch -> "YYYY-MM-DDTHH:MM:"


def timestamp(t: Timestamp) -> str:
    """t.ToJsonString(), the same string (Z, and 0, 3, 6 or 9 fractional digits) in a third of
    the time: its datetime arithmetic was a third of rendering a large answer (a notification
    list has tens of thousands of them), and an answer's times share their minutes."""
    seconds, nanos = t.seconds, t.nanos
    if not (_SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return str(t.ToJsonString())  # raises protobuf's ValueError
    minute, secs = divmod(seconds, 60)
    head = _MINUTES.get(minute)
    if head is None:
        if len(_MINUTES) >= 100_000:
            _MINUTES.clear()
        head = _MINUTES[minute] = (_EPOCH + timedelta(minutes=minute)).isoformat()[:17]
    if nanos == 0:
        return f"{head}{secs:02d}Z"
    if nanos % 1_000_000 == 0:
        return f"{head}{secs:02d}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{head}{secs:02d}.{nanos // 1000:06d}Z"
    return f"{head}{secs:02d}.{nanos:09d}Z"


def _getter(field: FieldDescriptor) -> Callable[[Message], Any]:
    name = field.name
    if name.endswith("_json") and field.type == FieldDescriptor.TYPE_STRING:  # an embedded JSON document
        return lambda m: orjson.loads(getattr(m, name)) if getattr(m, name) else None
    if field.message_type is not None:
        if field.message_type.full_name == TIMESTAMP:
            if _repeated(field):
                return lambda m: [timestamp(t) for t in getattr(m, name)]
            return lambda m: timestamp(getattr(m, name)) if m.HasField(name) else None
        if _repeated(field):
            return lambda m: [to_json(v) for v in getattr(m, name)]
        return lambda m: to_json(getattr(m, name)) if m.HasField(name) else None
    if field.enum_type is not None:
        names = enum_names(field.enum_type)
        if _repeated(field):
            return lambda m: [names.get(v, str(v)) for v in getattr(m, name)]
        return lambda m: names.get(getattr(m, name), str(getattr(m, name)))
    if _repeated(field):
        return lambda m: list(getattr(m, name))
    if field.has_presence:  # proto3 optional: null when unset
        return lambda m: getattr(m, name) if m.HasField(name) else None
    return lambda m: getattr(m, name)


def to_json(message: Message, flatten: frozenset[str] = frozenset()) -> dict[str, Any]:
    """JSON of `message`; fields named in `flatten` hold messages whose `lot` is merged into them
    ({"lot": {...}, "depth": 1} -> {"lot_code": ..., "depth": 1})."""
    if not flatten:
        return {name: get(message) for name, get in _plan(message.DESCRIPTOR)}
    out: dict[str, Any] = {}
    for name, get in _plan(message.DESCRIPTOR):
        if name not in flatten:
            out[name] = get(message)
        elif message.DESCRIPTOR.fields_by_name[name].is_repeated:
            out[name] = [_flat(item) for item in getattr(message, name)]
        else:
            out[name] = _flat(getattr(message, name)) if message.HasField(name) else None
    return out


def _flat(message: Message) -> dict[str, Any]:
    item = to_json(message)
    return {**(item.pop("lot") or {}), **item}


def dumps(message: Message, flatten: frozenset[str] = frozenset(), chunk: int = 500) -> bytes:
    """The bytes of `orjson.dumps(to_json(message, flatten))`, its repeated message fields
    encoded `chunk` items at a time: a 10,000-lot answer never exists whole as Python objects
    (tens of MB more than its JSON), only its JSON does."""
    parts: list[bytes] = []
    fields: list[Any] = list(message.DESCRIPTOR.fields)
    for field, (name, get) in zip(fields, _plan(message.DESCRIPTOR), strict=True):
        if name in flatten and not _repeated(field):
            held = message.HasField(field.name)
            value = orjson.dumps(_flat(getattr(message, field.name)) if held else None)
        elif field.message_type is None or not _repeated(field) or field.message_type.full_name == TIMESTAMP:
            value = orjson.dumps(get(message))
        else:
            convert = _flat if name in flatten else to_json
            items = getattr(message, field.name)
            value = (
                b"["
                + b",".join(
                    orjson.dumps([convert(item) for item in items[i : i + chunk]])[1:-1]
                    for i in range(0, len(items), chunk)
                )
                + b"]"
            )
        parts.append(orjson.dumps(name) + b":" + value)
    return b"{" + b",".join(parts) + b"}"


# --- JSON -> protobuf ------------------------------------------------------------------------


def _scalar(field: Any, value: Any, path: str) -> Any:
    if field.enum_type is not None:
        values = enum_values(field.enum_type)
        if not isinstance(value, str) or value not in values:
            raise JsonInputError(path, f"must be one of {', '.join(values)}")
        return values[value]
    if field.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise JsonInputError(path, "must be a string")
        return value
    if field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise JsonInputError(path, "must be true or false")
        return value
    if isinstance(value, bool):
        raise JsonInputError(path, "must be a number")
    if field.type in _INTS:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise JsonInputError(path, "must be an integer") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise JsonInputError(path, "must be an integer")
        limit = (
            _INT32_MAX
            if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32)
            else 2**63 - 1
        )
        if not -limit - 1 <= value <= limit:
            raise JsonInputError(path, "is out of range")
        return value
    if field.type in _FLOATS:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise JsonInputError(path, "must be a number") from None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise JsonInputError(path, "must be a finite number")
        return float(value)
    raise JsonInputError(path, "is not supported")  # bytes: not used by the HTTP API


def fill(message: Message, data: dict[str, Any], path: str = "") -> Message:
    """Set `message` from JSON `data`; JsonInputError names the first bad field."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        where = f"{path}{key}"
        field = fields.get(key)
        if field is None:
            raise JsonInputError(where, "is not a known field")
        if value is None:
            if field.has_presence and not _repeated(field):
                continue  # optional field: null means not set
            raise JsonInputError(where, "must not be null")
        if _repeated(field):
            if not isinstance(value, list):
                raise JsonInputError(where, "must be a list")
            target = getattr(message, key)
            for i, item in enumerate(value):
                if field.message_type is not None:
                    if not isinstance(item, dict):
                        raise JsonInputError(f"{where}[{i}]", "must be an object")
                    fill(target.add(), item, f"{where}[{i}].")
                else:
                    target.append(_scalar(field, item, f"{where}[{i}]"))
        elif field.message_type is not None:
            if field.message_type.full_name == TIMESTAMP:
                if not isinstance(value, str):
                    raise JsonInputError(where, "must be an RFC 3339 timestamp")
                try:
                    getattr(message, key).FromJsonString(value)
                except ValueError:
                    raise JsonInputError(
                        where, "must be an RFC 3339 timestamp, e.g. 2026-01-16T08:00:00Z"
                    ) from None
            elif not isinstance(value, dict):
                raise JsonInputError(where, "must be an object")
            else:
                fill(getattr(message, key), value, f"{where}.")
        else:
            setattr(message, key, _scalar(field, value, where))
    return message


# --- JSON Schema -----------------------------------------------------------------------------


def schema_name(descriptor: Descriptor) -> str:
    return descriptor.full_name.split(".")[-1]


def field_schema(field: FieldDescriptor, refs: dict[str, Descriptor]) -> dict[str, Any]:
    if json_name(field) != field.name:
        return {"type": ["object", "null"]}
    if field.message_type is not None:
        if field.message_type.full_name == TIMESTAMP:
            item: dict[str, Any] = {"type": "string", "format": "date-time"}
        else:
            refs[schema_name(field.message_type)] = field.message_type
            item = {"$ref": f"#/components/schemas/{schema_name(field.message_type)}"}
    elif field.enum_type is not None:
        item = {"type": "string", "enum": list(enum_values(field.enum_type))}
    elif field.type == FieldDescriptor.TYPE_STRING:
        item = {"type": "string"}
    elif field.type == FieldDescriptor.TYPE_BOOL:
        item = {"type": "boolean"}
    elif field.type in _INTS:
        bits = 32 if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32) else 64
        item = {"type": "integer", "minimum": -(2 ** (bits - 1)), "maximum": 2 ** (bits - 1) - 1}
    else:
        item = {"type": "number"}
    if _repeated(field):
        return {"type": "array", "items": item}
    if field.message_type is not None or field.has_presence:
        return (
            {"anyOf": [item, {"type": "null"}]}
            if "$ref" in item
            else {**item, "type": [item["type"], "null"]}
        )
    return item


def flat_schema(descriptor: Descriptor, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """Schema of _flat(message): the fields of its `lot` merged with its own."""
    lot = descriptor.fields_by_name["lot"].message_type
    assert lot is not None
    props = {f.name: field_schema(f, refs) for f in lot.fields}
    props.update((f.name, field_schema(f, refs)) for f in descriptor.fields if f.name != "lot")
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def message_schema(
    descriptor: Descriptor, refs: dict[str, Descriptor], *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Schema of a message as to_json writes it (every field present) or fill reads it."""
    props = {json_name(f): field_schema(f, refs) for f in descriptor.fields if f.name not in skip}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
