"""A stack pasted into the console (the ``berth ctl deploy -f`` format) or filled into its small
form, turned into service calls: the node by name or id, the stack's registries created or
updated by name, then the deployment. Problems name the stack's field."""

from __future__ import annotations

from typing import Any

from berth.platform.models import DeploymentCreate, DeploymentRecord, RegistryBody
from berth.platform.problems import InvalidInput
from berth.platform.services import Services
from berth.platform.shells.requests import parse_model
from berth.stackfile import Stack, StackError, parse_stack


async def create_from_stack(services: Services, stack: Stack) -> DeploymentRecord:
    node = next((n for n in await services.nodes.all() if stack.node in (n.id, n.name)), None)
    if node is None:
        raise InvalidInput("node", f"no node named or with id {stack.node!r}")
    existing = {r.name: r for r in await services.registries.all()}
    for spec in stack.registry_specs():
        body = parse_model(RegistryBody, spec)
        known = existing.get(body.name)
        registry = (
            await services.registries.update(known.id, body)
            if known is not None
            else await services.registries.create(body)
        )
        existing[registry.name] = registry
    try:
        payload = stack.payload(node.id, {name: r.id for name, r in existing.items()})
    except StackError as err:
        field, _, problem = str(err).partition(": ")
        raise InvalidInput(field, problem) from None
    return await services.deployments.create(parse_model(DeploymentCreate, payload))


def parse_pasted(text: str) -> Stack:
    try:
        return parse_stack(text)
    except StackError as err:
        field, sep, problem = str(err).partition(": ")
        raise InvalidInput(field if sep else "stack", problem if sep else str(err)) from None


def stack_from_form(form: dict[str, str]) -> Stack:
    """The console's small form: one instance, its ports, environment and an optional command."""
    common: dict[str, Any] = {"name": form.get("name", "").strip()}
    ports = []
    for index, item in enumerate(form.get("ports", "").replace(",", " ").split()):
        internal, sep, external = item.partition(":")
        if not internal.isdigit() or (sep and not external.isdigit()):
            raise InvalidInput(f"ports[{index}]", "write INTERNAL or INTERNAL:EXTERNAL, e.g. 8080:8080")
        port = {"internal": int(internal)}
        if sep:
            port["external"] = int(external)
        ports.append(port)
    if ports:
        common["ports"] = ports
    environment = {}
    for line in form.get("environment", "").splitlines():
        if line.strip():
            key, sep, value = line.strip().partition("=")
            if not sep or not key:
                raise InvalidInput("environment", "one KEY=value per line")
            environment[key] = value
    if environment:
        common["environment"] = environment
    command = form.get("command", "").strip()
    if command:
        common["commands"] = ["sh", "-c"]
        common["args"] = [command]
    instance: dict[str, Any] = {
        "image": form.get("image", "").strip(),
        "tag": form.get("tag", "").strip() or "latest",
        "config": {"common": common, "dagent": {"restartPolicy": "UNLESS_STOPPED"}},
    }
    if form.get("registry"):
        instance["registry"] = form["registry"]
    doc = {"node": form.get("node", ""), "prefix": form.get("prefix", "").strip(), "instances": [instance]}
    try:
        return Stack.model_validate(doc)
    except ValueError as err:
        raise InvalidInput("form", str(err).splitlines()[-1].strip()[:300]) from None
