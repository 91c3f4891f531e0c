"""The plan in the process that trains: lanes grouped into programs by the structure of their
built models (one program per model structure, loss, batch size and shuffling)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from raygrid.engine.fitting import Payload
from raygrid.engine.fused.lanedata import check_lane
from raygrid.engine.fused.members import Member, Unfusable, member_for
from raygrid.engine.fused.plan import (GroupSpec, NotFusable, check_search, fingerprint,
                                       lane_seed, plan_lanes)
from raygrid.engine.fused.runtime import configure_compilation_cache, without_tensorflow
from raygrid.engine.plan import Trial


@dataclass
class FusionPlan:
    groups: list[GroupSpec]
    rest: list[Trial]  # for the standard executor
    reasons: dict[str, int]  # why trials were left to the standard executor -> how many
    members: dict[str, "Member"]  # models built while planning (reused in this process)
    plan_s: float = 0.0
    why: dict[tuple[int, int], str] = field(default_factory=dict)  # (candidate, fold) -> reason


def plan_fusion(payload: Payload, trials: Sequence[Trial], engine: str = "fused",
                members: dict | None = None) -> FusionPlan:
    """Split ``trials`` into fused groups and the rest (which the standard executor runs)."""
    with without_tensorflow():
        if payload.keras:
            try:
                configure_compilation_cache()
            except Exception:  # noqa: BLE001 - no JAX here: check_search says why
                pass
        return _plan_fusion(payload, trials, engine, members)


def _plan_fusion(payload: Payload, trials: Sequence[Trial], engine: str,
                 members: dict | None) -> FusionPlan:
    started = time.perf_counter()
    reasons: dict[str, int] = {}
    why: dict[tuple[int, int], str] = {}
    members = {} if members is None else members

    def leave(trial_list, reason: str):
        reasons[reason] = reasons.get(reason, 0) + len(trial_list)
        rest.extend(trial_list)
        why.update({(t.candidate, t.fold): reason for t in trial_list})

    rest: list[Trial] = []
    try:
        check_search(payload)
    except NotFusable as exc:
        leave(list(trials), str(exc))
        return FusionPlan([], rest, reasons, members, time.perf_counter() - started, why)
    lanes, lane_opts = plan_lanes(payload, trials, leave)

    # Build one model per build key (from the first fold's training rows) to learn structures.
    by_group: dict[str, GroupSpec] = {}
    for lane_key, lane in lanes.items():
        try:
            member = member_for(payload, lane, members)
        except NotFusable as exc:
            member = members[lane.build_key] = Unfusable(str(exc))
        except Exception as exc:  # noqa: BLE001 - the standard engine reports it properly
            member = members[lane.build_key] = Unfusable(
                f"the model could not be built for fusion ({type(exc).__name__}: {exc})")
        if isinstance(member, Unfusable):
            leave(lane.all_trials(), member.reason)
            continue
        try:
            check_lane(payload, lane, member)
        except NotFusable as exc:
            leave(lane.all_trials(), str(exc))
            continue
        lane.seed = lane_seed(payload, lane)
        shared = lane_opts[lane_key]
        gkey = fingerprint((member.group_signature(lane.build_key), shared))
        spec = by_group.get(gkey)
        if spec is None:
            spec = by_group[gkey] = GroupSpec(gkey, shared[0], shared[1], [], shared)
        spec.lanes.append(lane)

    groups = []
    for spec in by_group.values():
        if engine == "auto" and len(spec.lanes) < 2:
            leave(spec.trials(), "a group of one lane (engine='auto' fuses two or more)")
        else:
            groups.append(spec)
    return FusionPlan(groups, rest, reasons, members, time.perf_counter() - started, why)
