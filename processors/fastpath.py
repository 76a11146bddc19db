"""The usual body in one pass: decoded and checked by msgspec (in C), then made its snapshot row.

The fast path takes only what it can take exactly: an Identity Server's message (`cli` null or absent,
`entities_count` an object) with no field but the declared ones, each value of its declared JSON type (strict: no
float, bool or string for a count, no null for an object), its UID well-formed, every count within the plausibility
limit and the plausible sizes kept. Its shape is derived from core/schema.py's models (`struct_of`), the one
declaration of the message, and its checks are the schema's own (the UID's, `largest`, `beyond_bounds`).

It decides no rejection: for any other body it returns None and the body goes the way it always went
(processors/validate.py `validate`, then processors/snapshot.py), which accepts it or names the reason. So every
rejection, and every message the fast path declines (a CLI report, an unknown field, ...), is what it was, and a
message it accepts is the one `validate` accepts, with the same values, made its row by the same `snapshot_row`
(tests/unit/test_fast_path.py compares the two paths on the simulator's bodies and on hostile ones). msgspec's JSON
is the same language as pydantic's here (UTF-8 only, no NaN, no lone surrogate, no control character in a string,
the last of duplicate keys wins) except for integers beyond 64 bits, which it reads: a count above the plausibility
limit, or above UINT64_MAX whatever the limit, declines the body.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from annotated_types import Ge, Le
from pydantic import BaseModel, Strict
from pydantic.fields import FieldInfo

from core.rows import SnapshotRow
from core.schema import UINT64_MAX, EntitiesCount, TelemetryMessage, _valid_is_uid
from processors.snapshot import snapshot_row
from processors.validate import inconsistencies

#: The models' methods and properties the checks and the row read (copied onto the structs: one definition of each).
METHODS = ("summed", "largest", "counts", "beyond_bounds", "kind", "is_default_uid")


def _type_of(annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type of a field of a model, as strict as pydantic's or stricter; TypeError for what this does not
    know (a new kind of field must be given its msgspec type here, or the fast path would check less)."""
    origin = get_origin(annotation)
    if origin is Annotated:  # a dict's values: Annotated[int, FieldInfo(... constraints)]
        base, *extra = get_args(annotation)
        return _type_of(
            base, [*metadata, *(m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e]))]
        )
    if annotation is int:
        ge: int | None = None
        for m in metadata:
            if isinstance(m, Ge):
                ge = int(m.ge)  # type: ignore[call-overload]  # annotated_types says SupportsGe
            elif isinstance(m, Le) and m.le == UINT64_MAX:
                pass  # msgspec bounds stop at 64 signed bits: checked after decoding, on `largest()` (`row`)
            elif not isinstance(m, Strict):
                raise TypeError(f"no msgspec type for an int constrained by {m!r}")
        return int if ge is None else Annotated[int, msgspec.Meta(ge=ge)]
    if annotation is str:
        if any(not isinstance(m, Strict) for m in metadata):
            raise TypeError(f"no msgspec type for a str constrained by {metadata!r}")
        return str
    if origin is dict:
        key, value = get_args(annotation)
        return dict[_type_of(key, []), _type_of(value, [])]  # type: ignore[misc]
    if origin in (Union, types.UnionType):
        return Union[tuple(_type_of(a, []) if a is not type(None) else a for a in get_args(annotation))]  # noqa: UP007
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return struct_of(annotation)
    raise TypeError(f"no msgspec type for {annotation!r}")


_STRUCTS: dict[type[BaseModel], type[msgspec.Struct]] = {}


def struct_of(model: type[BaseModel], overrides: dict[str, tuple[Any, Any]] | None = None) -> type[msgspec.Struct]:
    """A msgspec Struct of `model`'s fields (types, defaults), refusing unknown fields, with its METHODS.
    `overrides`: field name -> (type, default) for what the fast path narrows (msgspec.NODEFAULT: required)."""
    if not overrides and model in _STRUCTS:
        return _STRUCTS[model]
    fields: list[tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        if overrides and name in overrides:
            fields.append((name, *overrides[name]))
            continue
        kind = _type_of(info.annotation, list(info.metadata))
        if info.default_factory is not None:
            factory: Any = info.default_factory
            made = struct_of(factory) if isinstance(factory, type) and issubclass(factory, BaseModel) else factory
            fields.append((name, kind, msgspec.field(default_factory=made)))
        elif info.is_required():
            fields.append((name, kind, msgspec.NODEFAULT))
        else:
            fields.append((name, kind, info.default))
    namespace = {name: model.__dict__[name] for name in METHODS if name in model.__dict__}
    struct = msgspec.defstruct(
        model.__name__,
        [(name, kind) if default is msgspec.NODEFAULT else (name, kind, default) for name, kind, default in fields],
        namespace=namespace,
        kw_only=True,
        forbid_unknown_fields=True,
        gc=False,  # ints, strings and dicts of them: no cycles
    )
    if not overrides:
        _STRUCTS[model] = struct
    return struct


#: An Identity Server's message: `cli` null or absent, `entities_count` an object.
IdentityServerMessage = struct_of(
    TelemetryMessage, {"cli": (None, None), "entities_count": (struct_of(EntitiesCount), msgspec.NODEFAULT)}
)
_DECODER = msgspec.json.Decoder(IdentityServerMessage)


def row(
    body: bytes, received_at_ms: int, partition: int, offset: int, index: int, plausibility_limit: int
) -> SnapshotRow | None:
    """The snapshot row of `body` if the fast path can take it (the same row `validate` and `snapshot_row` make of it),
    else None: then the usual path decides."""
    try:  # a struct with TelemetryMessage's fields and methods: snapshot_row and inconsistencies read it as one
        message: Any = _DECODER.decode(body)
    except msgspec.DecodeError:  # and msgspec.ValidationError, a DecodeError
        return None
    if (
        not _valid_is_uid(message.uid)
        or message.largest() > min(plausibility_limit, UINT64_MAX)
        or message.beyond_bounds() is not None
    ):
        return None
    os_ = message.os
    if os_ is not None:
        os_.operating_system, os_.arch, os_.binary_version, os_.golang_version = map(
            _shared, (os_.operating_system, os_.arch, os_.binary_version, os_.golang_version)
        )
    return snapshot_row(message, body, received_at_ms, partition, offset, inconsistencies(message), index)


#: Short strings seen, each as one object: msgspec makes a new string of every value, where pydantic's parser shares
#: the short ones it has seen. A fleet has a few hundred OS, architecture and version strings: rows that share them
#: cost less to hash (the roll-up's interning) and to serialise (the sink's insert). Bounded: emptied when full.
_SHARED: dict[str, str] = {}
SHARED_MAX, SHARED_LENGTH = 4096, 64


def _shared(s: str) -> str:
    found = _SHARED.get(s)
    if found is not None:
        return found
    if len(s) <= SHARED_LENGTH:
        if len(_SHARED) >= SHARED_MAX:
            _SHARED.clear()
        _SHARED[s] = s
    return s
