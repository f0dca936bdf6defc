"""Fills a store through the coordinator's own write path (enrollment, job creation,
dispatch rounds, result batches: the functions production runs) with a fleet of
plausible edge devices and results carrying realistic payloads (raw timestamps, sensor
samples, environment). The browser and API tests use a small fill; benchmarks/dashboard.py
a large one.

`hostile` puts markup and rich-text markup into every string an agent or a submitter
controls (CPU model, host name, tags, model file name, error text): pages must show it
as text."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import col, select

from edgebench.coordinator import lifecycle
from edgebench.coordinator.jobspec import new_job, plan_runs
from edgebench.coordinator.lifecycle import ClaimRequest, ResultIn
from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import Agent, Device, Run, RunState, utcnow
from edgebench.device import HardwareInfo
from edgebench.measure.packing import pack_reps
from edgebench.measure.record import DEFINITIONS_VERSION, RepTiming, summarize
from tests.conftest import job_spec

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>[/bold]"
# What would take over a terminal: a hyperlink, a bell, clearing the screen.
TERMINAL = "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07\x1b[2J\x9b"

# (file name, parameters, decode tok/s at Q4_0 on a Pi 5)
MODELS = (
    ("smollm2-135m-instruct-f16.gguf", 134_515_008, 62.0),
    ("qwen2.5-0.5b-instruct-f16.gguf", 494_032_768, 21.0),
    ("tinyllama-1.1b-chat-f16.gguf", 1_100_048_384, 9.5),
    ("phi-3-mini-4k-instruct-f16.gguf", 3_821_079_552, 2.9),
)
_BASE_TPS = {f"{i + 1:x}" * 64: tps for i, (_, _, tps) in enumerate(MODELS)}
VARIANTS = {"Q4_0": 1.0, "Q8_0": 0.62, "F16": 0.34}  # speed relative to Q4_0
# (name prefix, identity, speed relative to a Pi 5, watts under load)
CLASSES: tuple[tuple[str, dict[str, Any], float, float], ...] = (
    ("pi5", {"cpu_model": "Cortex-A76", "cpu_cores_physical": 4, "cpu_cores_logical": 4,
             "cpu_max_mhz": 2400.0, "ram_bytes": 8 * 1024**3, "arch": "aarch64",
             "accelerator": "none", "os": "Linux"}, 1.0, 7.5),
    ("pi4", {"cpu_model": "Cortex-A72", "cpu_cores_physical": 4, "cpu_cores_logical": 4,
             "cpu_max_mhz": 1800.0, "ram_bytes": 4 * 1024**3, "arch": "aarch64",
             "accelerator": "none", "os": "Linux"}, 0.45, 5.2),
    ("orin", {"cpu_model": "ARMv8 Processor rev 1 (v8l)", "cpu_cores_physical": 6,
              "cpu_cores_logical": 6, "cpu_max_mhz": 1510.0, "ram_bytes": 8 * 1024**3,
              "arch": "aarch64", "accelerator": "cuda", "os": "Linux"}, 2.6, 14.0),
    ("laptop", {"cpu_model": "12th Gen Intel(R) Core(TM) i7-1260P", "cpu_cores_physical": 12,
                "cpu_cores_logical": 16, "cpu_max_mhz": 4700.0, "ram_bytes": 16 * 1024**3,
                "arch": "x86_64", "accelerator": "none", "os": "Linux"}, 3.1, 28.0),
)  # fmt: skip
TESTS = ((64, 32), (512, 128))  # (prompt, generated)
ENGINES = {"llama_cpp": "0.3.36"}
OLD_ENGINE = "0.3.20"


@dataclass
class Filled:
    devices: list[Device] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)  # sha256 -> file name
    results: int = 0
    failed_runs: list[str] = field(default_factory=list)


def fill(
    store: Store,
    *,
    devices: int,
    results: int,
    seed: int = 1,
    hostile: bool = False,
    samples: int = 240,
    progress: Callable[[int], None] | None = None,
) -> Filled:
    """Enrolls `devices` devices and stores about `results` results (at least one job's
    worth per device), a dispatch round and a result batch at a time."""
    rng = random.Random(seed)
    filled = Filled()
    filled.models = _models(store, hostile)
    agents = _enroll(store, devices, rng, hostile, filled)
    per_device = max(1, results // max(devices, 1))
    jobs_each = -(-per_device // (len(filled.models) * len(VARIANTS) * len(TESTS)))
    for device in filled.devices:
        for _ in range(jobs_each):
            _queue(store, device.name)
    _interleave(store)
    speed = {d.id: _speed_of(d) for d in filled.devices}
    # a third of the fleet still runs an older engine (a regression to look for)
    versions = {d.id: OLD_ENGINE if i % 3 == 2 else ENGINES["llama_cpp"]
                for i, d in enumerate(filled.devices)}  # fmt: skip
    while filled.results < results:
        stored = _round(store, agents, (speed, versions), rng, samples)
        if not stored:
            break
        filled.results += stored
        if progress:
            progress(filled.results)
    if hostile and filled.devices:
        _fail_one(store, agents[0], filled)
    return filled


def _models(store: Store, hostile: bool) -> dict[str, str]:
    models = {}
    for index, (name, parameters, _) in enumerate(MODELS):
        shown = f"{HOSTILE}-{name}" if hostile and index == 0 else name
        sha = f"{index + 1:x}" * 64  # as _BASE_TPS
        store.add_artifact(sha256=sha, filename=shown, size_bytes=parameters * 2, fmt="gguf",
                           parameters=parameters)  # fmt: skip
        models[sha] = shown
    return models


def _enroll(
    store: Store, count: int, rng: random.Random, hostile: bool, filled: Filled
) -> list[tuple[Agent, Device]]:
    agents = []
    for index in range(count):
        prefix, identity, _, _ = CLASSES[index % len(CLASSES)]
        contributor = index % 5 == 4
        hardware = dict(identity, hostname=f"{prefix}-host-{index}", engines=ENGINES,
                        python_version="3.11.2", edgebench_version="0.1.0")  # fmt: skip
        tags = {"site": rng.choice(["lab", "home", "office"])}
        if hostile:
            hardware.update(cpu_model=f"{identity['cpu_model']} {HOSTILE}", hostname=TERMINAL)
            tags["note"] = HOSTILE
        enrollment = store.enroll(
            token=store.create_enrollment_token(contributor=contributor),
            name=f"{prefix}-{index:04d}",
            hardware=HardwareInfo.from_flat(hardware),
            tags=tags,
        )
        agent = store.authenticate_agent(enrollment.agent_id, enrollment.secret)
        assert agent is not None
        device = store.get_device(enrollment.device_id)
        agents.append((agent, device))
        filled.devices.append(device)
    store.fleet(fresh=True)
    return agents


def _queue(store: Store, device: str) -> None:
    shas = [f"{i + 1:x}" * 64 for i in range(len(MODELS))]
    spec = job_spec(models=shas, backends=["llama_cpp"], variants=list(VARIANTS),
                    n_prompt=[p for p, _ in TESTS], n_gen=[TESTS[0][1]], reps=3,
                    device=device, submitter="fill")  # fmt: skip
    formats = dict.fromkeys(shas, "gguf")
    store.create_job(new_job(spec), plan_runs(spec, formats), spec.selector)


def _interleave(store: Store) -> None:
    """Orders the queue device by device (run k of every device before run k+1 of any),
    as agents asking together would find it; queued device after device, a dispatch
    round's look at the oldest runs would find work for a few devices only."""
    with store.writing() as s:
        runs = s.exec(select(Run.id, Run.device_name).where(Run.state == RunState.QUEUED)
                      .order_by(col(Run.created_at))).all()  # fmt: skip
        seen: dict[str | None, int] = {}
        start, updates = utcnow(), []
        for run_id, device in runs:
            rank = seen[device] = seen.get(device, -1) + 1
            updates.append(
                {"run": run_id, "at": start + timedelta(microseconds=rank * 10_000 + len(seen))}
            )
        if updates:
            s.connection().execute(
                update(Run)
                .where(col(Run.id) == bindparam("run"))
                .values(created_at=bindparam("at")),
                updates,
            )


def _speed_of(device: Device) -> float:
    prefix = device.name.split("-")[0]
    return next(speed for name, _, speed, _ in CLASSES if name == prefix)


def _round(
    store: Store,
    agents: list[tuple[Agent, Device]],
    devices: tuple[dict[str, float], dict[str, str]],
    rng: random.Random,
    samples: int,
) -> int:
    """One dispatch round for every agent, then one batch of their results."""
    requests = [ClaimRequest(agent, device) for agent, device in agents]
    with store.writing() as s:
        claims = lifecycle.claim_runs(s, requests, 600, store.retry_base_seconds)
    items = []
    for (agent, device), claim in zip(agents, claims, strict=True):
        if claim is None:
            continue
        speed, version = devices[0][device.id], devices[1][device.id]
        values, timings = _result(claim.run, speed, version, rng, samples)
        items.append(ResultIn(agent.id, str(uuid.uuid4()), claim.run.id,
                              claim.run.lease_epoch, values, timings))  # fmt: skip
    with store.writing() as s:
        refused = [r for r in lifecycle.store_results(s, items) if r is not None]
    assert not refused, refused[:3]
    return len(items)


def _result(
    run: Any, speed: float, version: str, rng: random.Random, samples: int
) -> tuple[dict[str, Any], bytes]:
    decode = (
        _BASE_TPS[run.model_sha256] * speed * VARIANTS.get(run.variant, 1.0) * rng.uniform(0.9, 1.1)
    )
    prefill = decode * rng.uniform(6, 9)
    gap_ns = 1e9 / decode
    reps = []
    for _ in range(3):
        first = int(run.n_prompt / prefill * 1e9)
        stamps, t = [], first
        for _ in range(run.n_gen):
            stamps.append(t)
            t += int(gap_ns * rng.uniform(0.85, 1.3))
        reps.append(RepTiming(prefill_ns=first - int(gap_ns), token_ns=tuple(stamps)))
    result = summarize(reps, backend=run.backend, variant=run.variant,
                       model_sha256=run.model_sha256, threads=4, n_prompt=run.n_prompt,
                       load_ms=rng.uniform(300, 3000), peak_rss_mb=rng.uniform(200, 4000),
                       engine_version=version, model_size_mb=500.0)  # fmt: skip
    values = result.fields()
    watts = 7.5 * speed**0.5
    values.update(
        avg_power_w=watts,
        prefill_j_per_token=watts / prefill,
        decode_j_per_token=watts / decode,
        temp_max_c=rng.uniform(45, 85) if rng.random() > 0.1 else None,  # no sensor
        throttled=rng.random() < 0.1,
        noisy=rng.random() < 0.05,
        engine_version=version,
        definitions_version=DEFINITIONS_VERSION,
        source_sha256=run.model_sha256,
        environment_json=json.dumps(_environment(run)),
        sensors_json=json.dumps(_sensors(rng, samples, watts)),
    )
    return values, pack_reps(reps)


def _environment(run: Any) -> dict[str, Any]:
    return {
        "settings": {"requested": {"n_batch": 2048, "flash_attn": "auto"},
                     "in_force": {"n_ctx": 4096, "n_batch": 2048, "flash_attn": "off"}},
        "engine": {"name": run.backend, "version": ENGINES["llama_cpp"], "build": "cpu"},
        "governor": "ondemand",
        "power_state": {"cpufreq_governor": "ondemand"},
    }  # fmt: skip


def _sensors(rng: random.Random, count: int, watts: float) -> dict[str, Any]:
    rows = []
    temp = rng.uniform(40, 55)
    for i in range(count):
        t = round(i * 0.1, 2)
        temp += rng.uniform(-0.1, 0.25)
        rows.append([t, "thermal", "cpu-thermal", "temperature", round(temp, 2)])
        rows.append([t, "cpufreq", "cpu0", "frequency", rng.choice([1800.0, 2400.0])])
        rows.append([t, "hwmon", "power", "power", round(watts * rng.uniform(0.9, 1.1), 3)])
    return {"samples": rows, "throttle_events": [{"t_s": 5.0, "what": "soft temp limit"}],
            "sources": ["thermal", "cpufreq", "hwmon"], "sample_hz": 10}  # fmt: skip


def _fail_one(store: Store, agent_device: tuple[Agent, Device], filled: Filled) -> None:
    """A run that failed with an error text holding markup."""
    _queue(store, agent_device[1].name)
    agent, device = agent_device
    with store.writing() as s:
        (claim,) = lifecycle.claim_runs(s, [ClaimRequest(agent, device)], 600, 0.0)
    assert claim is not None
    error = f"engine said {HOSTILE}{TERMINAL}"
    with store.writing() as s:
        lifecycle.fail_run(s, agent_id=agent.id, run_id=claim.run.id,
                           epoch=claim.run.lease_epoch, error=error)  # fmt: skip
    filled.failed_runs.append(claim.run.id)
