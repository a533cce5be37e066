"""The runtime contract (berth.runtimes.base.Runtime): the same scenarios against the memory,
Docker and Kubernetes runtimes, with the same expected outcomes. Where a runtime legitimately
differs, the difference is declared once, in ``kits.runtime_rigs.EXPECTED``, and asserted here
like everything else."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable

import pytest
from kits.runtime_rigs import RecordedEvents, Rig
from waiting import wait_for, within

from berth.errors import InvalidSpec, NotFound, RuntimeFailure
from berth.model import (
    MANAGED_LABEL,
    ContainerRef,
    ContainerState,
    ContainerStatus,
    DeploymentSpec,
    LogItem,
    Port,
    PrefixTarget,
    SecretValue,
    StateUpdate,
    WorkloadSpec,
    frozen_map,
)

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")
SECRET = "s3cret-value-never-shown"
# what the controllers of a real cluster take to create or remove pods, on a busy machine
SETTLE_S = 30


async def deploy(
    rig: Rig, *workloads: WorkloadSpec, events: RecordedEvents | None = None, **extra: object
) -> None:
    spec = DeploymentSpec(id="dep-1", prefix=rig.prefix, workloads=workloads, **extra)
    await rig.runtime.deploy(spec, events or RecordedEvents())


async def listed(rig: Rig) -> dict[str, ContainerStatus]:
    update = await rig.runtime.list_state(rig.prefix)
    assert update.initial
    return {item.ref.name: item for item in update.items if item.ref.prefix == rig.prefix}


async def reaches(rig: Rig, name: str, state: ContainerState | None) -> None:
    """The state list shows ``name`` in ``state`` (``None``: not listed) within ``SETTLE_S``."""

    async def seen() -> bool:
        items = await listed(rig)
        return (name not in items) if state is None else (name in items and items[name].state == state)

    await wait_for(seen, SETTLE_S, f"{rig.name}: {name} listed as {state.name if state else 'gone'}")


async def next_update(
    updates: AsyncIterator[StateUpdate], match: Callable[[ContainerStatus], bool], what: str
) -> StateUpdate:
    async with within(SETTLE_S, what):
        async for update in updates:
            if any(match(item) for item in update.items):
                return update
    raise AssertionError(f"the watch ended before {what}")


async def lines(stream: AsyncIterator[LogItem], count: int) -> list[str]:
    got: list[str] = []
    async with within(SETTLE_S, f"{count} log lines"):
        async for item in stream:
            assert isinstance(item, str), item
            got.append(item)
            if len(got) == count:
                break
    return got


# -- preflight and deploy ---------------------------------------------------------------------------


async def test_preflight_names_the_engine(rig: Rig) -> None:
    info = await rig.runtime.preflight()
    assert info.kind in rig.expect.kinds
    assert info.version


async def test_a_deployed_workload_is_listed_with_its_image(rig: Rig, events: RecordedEvents) -> None:
    await deploy(rig, rig.workload("web"), events=events)
    assert not events.errors()
    assert any(workload_id == "wl-web" for workload_id, *_ in events.instances)
    await reaches(rig, "web", rig.expect.deployed)
    item = (await listed(rig))["web"]
    assert item.image_name.endswith("berth/busybox") and item.image_tag == "1"


async def test_the_deploy_events_end_with_the_deployed_state(rig: Rig, events: RecordedEvents) -> None:
    await deploy(rig, rig.workload("web"), rig.workload("db"), events=events)
    for workload_id in ("wl-web", "wl-db"):
        states = [state for wid, state, _, _ in events.instances if wid == workload_id]
        assert states and states[-1] == rig.expect.deployed, (workload_id, events.instances)


async def test_an_unknown_prefix_has_no_workloads_and_no_secrets(rig: Rig) -> None:
    update = await rig.runtime.list_state(rig.prefix)
    assert update.initial and update.items == ()
    assert await rig.runtime.secret_keys(PrefixTarget(rig.prefix)) == []
    assert await rig.runtime.secret_keys(ContainerRef(rig.prefix, "web")) == []


async def test_state_items_carry_the_ports_and_the_managed_label(rig: Rig) -> None:
    await deploy(rig, rig.workload("web", ports=(Port(8080),)))
    await reaches(rig, "web", rig.expect.deployed)
    item = (await listed(rig))["web"]
    assert 8080 in {mapping.internal for mapping in item.ports}
    assert item.labels.get(MANAGED_LABEL) == "true"
    assert item.created_at is not None


async def test_a_redeploy_replaces_the_workload(rig: Rig) -> None:
    await deploy(rig, rig.workload("web", tag="1"))
    await deploy(rig, rig.workload("web", tag="2"))
    await reaches(rig, "web", rig.expect.deployed)
    items = await listed(rig)
    assert list(items) == ["web"] and items["web"].image_tag == "2"


async def test_several_workloads_deploy_in_one_deployment(rig: Rig) -> None:
    await deploy(rig, rig.workload("a"), rig.workload("b"), rig.workload("c"))
    for name in ("a", "b", "c"):
        await reaches(rig, name, rig.expect.deployed)


# -- container commands -----------------------------------------------------------------------------


async def test_stop_start_and_restart(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    ref = ContainerRef(rig.prefix, "web")
    await rig.runtime.stop(ref)
    await reaches(rig, "web", ContainerState.EXITED)
    await rig.runtime.start(ref)
    await reaches(rig, "web", rig.expect.deployed)
    await rig.runtime.restart(ref)
    await reaches(rig, "web", rig.expect.deployed)


async def test_commands_on_an_unknown_container_are_not_found(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    for ref in (ContainerRef(rig.prefix, "missing"), ContainerRef(f"{rig.prefix}x", "web")):
        for command in (rig.runtime.start, rig.runtime.stop, rig.runtime.restart, rig.runtime.inspect):
            with pytest.raises(NotFound):
                await command(ref)
        with pytest.raises(NotFound):
            async for _ in rig.runtime.logs(ref, follow=False, tail_lines=10):
                pass


async def test_inspect_describes_the_workload_without_its_secret_values(rig: Rig) -> None:
    await deploy(rig, rig.workload("web", secrets={"DB_PASSWORD": SecretValue(SECRET)}))
    document = await rig.runtime.inspect(ContainerRef(rig.prefix, "web"))
    assert isinstance(json.loads(document), dict)
    assert "web" in document
    assert SECRET not in document


# -- delete -----------------------------------------------------------------------------------------


async def test_delete_removes_a_workload_and_a_missing_one_is_success(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"), rig.workload("db"))
    await rig.runtime.delete(ContainerRef(rig.prefix, "web"))
    await reaches(rig, "web", None)
    await reaches(rig, "db", rig.expect.deployed)
    again = await rig.runtime.delete(ContainerRef(rig.prefix, "web"))
    assert again.notes, "deleting what is gone says so"


async def test_a_delete_without_a_name_is_refused_and_removes_nothing(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    with pytest.raises(InvalidSpec):
        await rig.runtime.delete(ContainerRef(rig.prefix, ""))
    await reaches(rig, "web", rig.expect.deployed)
    assert list(await listed(rig)) == ["web"]


async def test_delete_of_a_prefix_removes_all_its_workloads(rig: Rig) -> None:
    await deploy(rig, rig.workload("a"), rig.workload("b"))
    await rig.runtime.delete(PrefixTarget(rig.prefix))
    await wait_for(
        lambda: _empty(rig), SETTLE_S, f"{rig.name}: every workload of the prefix removed", interval_s=0.2
    )


async def _empty(rig: Rig) -> bool:
    return not await listed(rig)


# -- secrets --------------------------------------------------------------------------------------


async def test_secret_keys_list_names_never_values(rig: Rig) -> None:
    secrets = {"TOKEN": SecretValue(SECRET), "DB_PASSWORD": SecretValue(SECRET)}
    await deploy(rig, rig.workload("web", secrets=secrets), shared_secrets=frozen_map({"SHARED": "sealed"}))
    assert sorted(await rig.runtime.secret_keys(ContainerRef(rig.prefix, "web"))) == ["DB_PASSWORD", "TOKEN"]
    assert await rig.runtime.secret_keys(PrefixTarget(rig.prefix)) == ["SHARED"]
    assert await rig.runtime.secret_keys(ContainerRef(rig.prefix, "missing")) == []


async def test_a_workload_without_secrets_has_no_secret_keys(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    assert await rig.runtime.secret_keys(ContainerRef(rig.prefix, "web")) == []
    assert await rig.runtime.secret_keys(PrefixTarget(rig.prefix)) == []


# -- logs -------------------------------------------------------------------------------------------


async def test_logs_tail_then_follow_with_timestamps(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    ref = ContainerRef(rig.prefix, "web")
    await rig.prints(ref, "one", "two", "three")

    async def tail() -> list[LogItem]:
        got = [item async for item in rig.runtime.logs(ref, follow=False, tail_lines=2)]
        return got if len(got) == 2 else []

    last_two = await wait_for(tail, SETTLE_S, f"{rig.name}: the last two lines printed")
    assert [str(line).split(" ", 1)[1] for line in last_two] == ["two\n", "three\n"]
    assert all(TIMESTAMPED.match(str(line)) for line in last_two), last_two

    stream = rig.runtime.logs(ref, follow=True, tail_lines=1)
    try:
        assert (await lines(stream, 1))[0].endswith(" three\n")
        await rig.prints(ref, "four")
        followed = await lines(stream, 1)
        assert followed[0].endswith(" four\n") and TIMESTAMPED.match(followed[0])
    finally:
        await stream.aclose()


async def test_a_followed_log_survives_a_restart(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    ref = ContainerRef(rig.prefix, "web")
    await rig.prints(ref, "before")
    stream = rig.runtime.logs(ref, follow=True, tail_lines=1)
    try:
        assert (await lines(stream, 1))[0].endswith(" before\n")
        await rig.runtime.restart(ref)
        await rig.runs_again(ref)
        await rig.prints(ref, "after")
        assert (await lines(stream, 1))[0].endswith(" after\n")
    finally:
        await stream.aclose()


async def test_logs_after_a_stop(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    ref = ContainerRef(rig.prefix, "web")
    await rig.prints(ref, "last words")
    await wait_for(lambda: _tail(rig, ref), SETTLE_S, f"{rig.name}: the printed line in the log")
    await rig.runtime.stop(ref)
    await rig.stopped(ref)
    await reaches(rig, "web", ContainerState.EXITED)
    if rig.expect.logs_outlive_a_stop:
        assert await _tail(rig, ref) == ["last words\n"]
    else:
        with pytest.raises(NotFound):
            await _tail(rig, ref)


async def _tail(rig: Rig, ref: ContainerRef) -> list[str]:
    return [str(line).split(" ", 1)[1] async for line in rig.runtime.logs(ref, follow=False, tail_lines=5)]


async def test_logs_without_history_give_nothing(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    ref = ContainerRef(rig.prefix, "web")
    await rig.prints(ref, "one")
    assert [item async for item in rig.runtime.logs(ref, follow=False, tail_lines=0)] == []


# -- state watch -----------------------------------------------------------------------------------


async def test_watch_lists_first_then_reports_deploys_and_removals(rig: Rig) -> None:
    await deploy(rig, rig.workload("first"))
    updates = rig.runtime.watch(rig.prefix)
    try:
        initial = await next_update(updates, lambda item: True, "the initial list")
        assert initial.initial
        assert {item.ref.name for item in initial.items} == {"first"}
        await deploy(rig, rig.workload("later"))
        await next_update(updates, lambda item: item.ref.name == "later", "the new workload")
        await rig.runtime.delete(ContainerRef(rig.prefix, "later"))
        await next_update(
            updates,
            lambda item: item.ref.name == "later" and item.state == ContainerState.REMOVED,
            "the removal",
        )
    finally:
        await updates.aclose()


async def test_watch_reports_a_stop(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    await reaches(rig, "web", rig.expect.deployed)
    updates = rig.runtime.watch(rig.prefix)
    try:
        await next_update(updates, lambda item: item.ref.name == "web", "the initial list")
        await rig.runtime.stop(ContainerRef(rig.prefix, "web"))
        await next_update(
            updates,
            lambda item: item.ref.name == "web" and item.state == ContainerState.EXITED,
            "the stopped workload",
        )
    finally:
        await updates.aclose()


async def test_the_whole_list_names_workloads_as_the_id_rule_says(rig: Rig) -> None:
    await deploy(rig, rig.workload("web"))
    await reaches(rig, "web", rig.expect.deployed)
    everything = await rig.runtime.list_state(None)
    expected = (
        ContainerRef("", f"{rig.prefix}-web")
        if rig.expect.unfiltered_refs_use_full_names
        else ContainerRef(rig.prefix, "web")
    )
    assert expected in {item.ref for item in everything.items}


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Bad_Name", "a" * 64, "web.1", "web/1"], ids=["capitals", "64-long", "dot", "slash"]
)
async def test_an_invalid_name_is_refused_and_nothing_is_deployed(
    rig: Rig, name: str, events: RecordedEvents
) -> None:
    with pytest.raises(InvalidSpec):
        await deploy(rig, rig.workload(name), events=events)
    assert events.errors()
    assert await listed(rig) == {}


async def test_a_missing_image(rig: Rig, events: RecordedEvents) -> None:
    workload = rig.missing_image("ghost")
    if rig.expect.missing_image_fails_the_deploy:
        with pytest.raises(RuntimeFailure):
            await deploy(rig, workload, events=events)
        assert events.errors(), "the failure is reported through the deploy events"
        assert "ghost" not in await listed(rig)
    else:
        await deploy(rig, workload, events=events)
        await reaches(rig, "ghost", rig.expect.deployed)


async def test_a_workload_named_twice(rig: Rig) -> None:
    twice = (rig.workload("web"), rig.workload("web", id="wl-other"))
    with pytest.raises(InvalidSpec):
        await deploy(rig, *twice)
    assert await listed(rig) == {}


async def test_an_invalid_prefix_is_refused(rig: Rig) -> None:
    bad = "Not_A_Prefix"
    spec = DeploymentSpec(id="dep-1", prefix=bad, workloads=(rig.workload("web", prefix=bad),))
    with pytest.raises(InvalidSpec):
        await rig.runtime.deploy(spec, RecordedEvents())
    assert await listed(rig) == {}


async def test_an_invalid_workload_anywhere_changes_nothing(rig: Rig, events: RecordedEvents) -> None:
    with pytest.raises(InvalidSpec):
        await deploy(
            rig, rig.workload("before"), rig.workload("Not_Valid"), rig.workload("after"), events=events
        )
    assert events.errors(), "the refusal is reported through the deploy events"
    assert await listed(rig) == {}
