"""Conversion between pydantic models and the protobuf messages that mirror them field for
field (edgebench/workload.py <-> proto/edgebench/v1/agent.proto). It iterates the model's
fields, so a field added to a model and its message travels without code here;
tests/unit/test_wire_shapes.py fails when the two drift."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)
MessageT = TypeVar("MessageT", bound=Message)


def enum_prefix(enum_name: str) -> str:
    """Protobuf's enum value prefix for an enum type: FlashAttention -> FLASH_ATTENTION_."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"


def to_message(model: BaseModel, message: MessageT) -> MessageT:
    """Fills `message` from `model`; None leaves an optional field unset."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        field: Any = message.DESCRIPTOR.fields_by_name[name]
        if value is None:
            continue
        if isinstance(value, BaseModel):
            to_message(value, getattr(message, name))
        elif isinstance(value, Enum):
            prefix = enum_prefix(field.enum_type.name)
            setattr(message, name, field.enum_type.values_by_name[prefix + value.name].number)
        elif isinstance(value, dict):
            getattr(message, name).update(value)
        elif isinstance(value, (list, tuple)):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def from_message(message: Message, model_type: type[ModelT]) -> ModelT:
    """The model a message describes, validated like any other input (a hostile peer's
    message gets pydantic's clear error). Unset optional fields and messages, and an
    unspecified enum, fall back to the model's defaults."""
    return model_type.model_validate(_values(message, model_type))


def _values(message: Message, model_type: type[BaseModel]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, info in model_type.model_fields.items():
        field: Any = message.DESCRIPTOR.fields_by_name[name]
        value = getattr(message, name)
        if _has_presence(field) and not message.HasField(name):
            continue
        if _is_map(field):
            values[name] = dict(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            nested = info.annotation
            assert isinstance(nested, type) and issubclass(nested, BaseModel)
            values[name] = _values(value, nested)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            if value == 0:  # *_UNSPECIFIED
                continue
            label = field.enum_type.values_by_number[value].name
            values[name] = label.removeprefix(enum_prefix(field.enum_type.name)).lower()
        elif _is_repeated(field):
            values[name] = list(value)
        else:
            values[name] = value
    return values


def _is_map(field: Any) -> bool:
    return bool(
        field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
    )


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _has_presence(field: Any) -> bool:
    return bool(field.has_presence) and not _is_repeated(field)
