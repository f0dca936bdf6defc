"""The protobuf messages mirror the pydantic models of edgebench/workload.py field for
field: a field on one side only, or with another kind or presence, fails here."""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from pydantic import BaseModel

from edgebench.device import DeviceCapabilities, DeviceIdentity, HardwareInfo
from edgebench.proto.convert import enum_prefix, from_message, to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.workload import SECTIONS, FlashAttention, RunSpec, Workload

MODELS: list[type[BaseModel]] = [
    RunSpec, Workload, *SECTIONS.values(), HardwareInfo, DeviceIdentity, DeviceCapabilities
]  # fmt: skip
PAIRS = [(model, getattr(pb, model.__name__)) for model in MODELS]


def _plain(annotation: Any) -> tuple[Any, bool]:
    """The annotation without None, and whether None is allowed."""
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


@pytest.mark.parametrize(("model", "message"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_message_mirrors_model(model: type[BaseModel], message: Any) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    assert set(fields) == set(model.model_fields), "a field exists on one side only"
    for name, info in model.model_fields.items():
        field: Any = fields[name]
        kind, nullable = _plain(info.annotation)
        if typing.get_origin(kind) is dict:
            assert field.message_type.GetOptions().map_entry, name
        elif typing.get_origin(kind) is list:
            assert field.is_repeated, name
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            assert field.type == FieldDescriptor.TYPE_MESSAGE, name
            assert field.message_type.name == kind.__name__, name
        elif isinstance(kind, type) and issubclass(kind, Enum):
            assert field.type == FieldDescriptor.TYPE_ENUM, name
            prefix = enum_prefix(field.enum_type.name)
            assert {v.name for v in field.enum_type.values} == {
                f"{prefix}UNSPECIFIED",
                *(prefix + member.name for member in kind),
            }
        else:
            assert nullable == field.has_presence, f"{name}: None on one side only"


def test_a_spec_survives_the_wire_and_unset_means_default() -> None:
    spec = RunSpec.of(
        backend="onnx", variant="int8", n_prompt=[8, 16], reps=0, cooldown_c=45.0,
        flash_attn=FlashAttention.OFF, repack=False, n_gpu_layers=0,
    )  # fmt: skip
    wire = to_message(spec, pb.RunSpec()).SerializeToString()
    assert from_message(pb.RunSpec.FromString(wire), RunSpec) == spec
    assert from_message(pb.RunSpec(), RunSpec).workload == Workload()


def test_a_hostile_spec_is_refused_with_the_field() -> None:
    from pydantic import ValidationError

    bad = to_message(RunSpec(), pb.RunSpec())
    bad.workload.tests.n_gen[:] = [1]
    with pytest.raises(ValidationError, match="n_gen"):
        from_message(bad, RunSpec)
    bad = to_message(RunSpec(), pb.RunSpec())
    bad.workload.engine.provider = "../../bin/sh"
    with pytest.raises(ValidationError, match="provider"):
        from_message(bad, RunSpec)


def test_hardware_survives_the_wire_and_bad_values_are_named() -> None:
    from edgebench.coordinator.wire import WireError, hardware_of

    flat = {"cpu_model": "Cortex-A76", "ram_bytes": 8 << 30,
            "engines": {"llama_cpp": "0.3.36"}, "kernel": "6.6"}  # fmt: skip
    sent = HardwareInfo.from_flat(flat)
    assert hardware_of(to_message(sent, pb.HardwareInfo())) == sent
    bad = to_message(sent, pb.HardwareInfo())
    bad.identity.cpu_cores_physical = -4
    with pytest.raises(WireError, match=r"identity\.cpu_cores_physical"):
        hardware_of(bad)
    bad = to_message(sent, pb.HardwareInfo())
    bad.capabilities.engines.update({f"e{i}": "1" for i in range(40)})
    with pytest.raises(WireError, match="at most 32 engines"):
        hardware_of(bad)


def test_public_models_that_mirror_a_table_name_only_its_columns() -> None:
    """The API's run and artifact models copy table columns (models.py must not import
    the ORM): a column renamed or dropped fails here, not at the first request."""
    from edgebench.coordinator.tables import Artifact, Run
    from edgebench.dashboard.models import ArtifactPublic, RunPublic

    run_internal = {"selector_json", "priority", "submitter", "lease_request_id", "agent_id",
                    "lease_expires_at", "failed_on_device_id"}  # fmt: skip
    pairs: list[tuple[Any, Any, set[str]]] = [
        (RunPublic, Run, run_internal),
        (ArtifactPublic, Artifact, {"created_at"}),
    ]
    for public, table, internal in pairs:
        columns = set(table.model_fields)
        assert set(public.model_fields) == columns - internal, public.__name__


def test_the_agent_refuses_an_assignment_without_a_spec_or_with_a_bad_one() -> None:
    from edgebench.agent.wire import WireError, spec_from

    with pytest.raises(WireError, match="no run spec or no test"):
        spec_from(pb.RunAssignment(run_id="r"))  # what an older coordinator sends
    no_test = to_message(RunSpec(), pb.RunSpec())
    no_test.workload.ClearField("tests")
    with pytest.raises(WireError, match="no run spec or no test"):
        spec_from(pb.RunAssignment(spec=no_test))
    bad = to_message(RunSpec(), pb.RunSpec())
    bad.workload.repetitions.reps = -3
    with pytest.raises(WireError, match="invalid run spec"):
        spec_from(pb.RunAssignment(spec=bad))
    assert spec_from(pb.RunAssignment(spec=to_message(RunSpec(), pb.RunSpec()))) == RunSpec()
