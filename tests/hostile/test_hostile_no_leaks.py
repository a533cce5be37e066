"""Secrets and tokens never appear in anything the agent says: its log output (debug level), the
deployment status messages, CommandErrors and AbortUpdate texts. The test runs ``berth agent`` as
a process, puts every secret and token it can through it, then greps all captured output for the
plaintexts (the ``dyo-node-token`` metadata is the one place a token belongs, and is not searched).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import jwt
import pysequoia
from fakeplatform import PlatformServer, eventually, mint_token
from kits.fault_kit import deployment_stream
from waiting import wait_event

from berth.proto import agent_pb2, common_pb2

SECRET = "plaintext-secret-9d2e7a"
FOREIGN_SECRET = "foreign-plaintext-41bb0c"
REGISTRY_PASSWORD = "registry-password-77f3e1"


def agent_env(data: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",
            "INTERNAL_MOUNT_PATH": str(data),
            "DATA_MOUNT_PATH": str(data),
            "BERTH_RUNTIME": "memory",
            "BERTH_HEALTH_SOCKET": str(data / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_LOG_LEVEL": "debug",
        }
    )
    return env


def encrypt_to(public_key: str, plaintext: str) -> str:
    cert = pysequoia.Cert.from_bytes(public_key.encode())
    return str(pysequoia.encrypt(plaintext.encode(), [cert]).decode())


def workload(secrets: dict[str, str]) -> agent_pb2.DeployWorkloadRequest:
    return agent_pb2.DeployWorkloadRequest(
        id="w1",
        imageName="busybox",
        tag="1",
        registry="registry.example",
        registryAuth=agent_pb2.RegistryAuth(
            name="r", url="registry.example", user="u", password=REGISTRY_PASSWORD
        ),
        common=agent_pb2.CommonContainerConfig(name="web", secrets=secrets),
    )


async def test_no_secret_or_token_in_any_output(tmp_path: Path) -> None:
    from berth.agent.credentials import AgentKey

    data = tmp_path / "data"
    data.mkdir()
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "berth",
            "agent",
            env=agent_env(data, install),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        output = asyncio.ensure_future(process.communicate())
        try:
            await platform.wait_unary("TokenReplaced", within_s=30)
            connection = await eventually(
                lambda: (data / "token.jwt").exists() and (data / "token.jwt").read_text()
            )
            public_key = platform.connects[0].info.publicKey
            good = encrypt_to(public_key, SECRET)
            foreign = encrypt_to(AgentKey.generate().public_key, FOREIGN_SECRET)

            deploy_good = agent_pb2.DeployRequest(id="good", prefix="p", requests=[workload({"DB": good})])
            deploy_bad = agent_pb2.DeployRequest(id="bad", prefix="q", requests=[workload({"API": foreign})])
            await platform.send(agent_pb2.AgentCommand(deploy=deploy_good))
            await platform.send(agent_pb2.AgentCommand(deploy=deploy_bad))
            good_record = await deployment_stream(platform, "good", within_s=20)
            bad_record = await deployment_stream(platform, "bad", within_s=20)
            assert good_record.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL
            assert bad_record.messages[-1].deploymentStatus == common_pb2.FAILED

            other_node = mint_token(iss=platform.iss, sub="another-node", token_type="connection")
            await platform.send(
                agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=other_node))
            )
            garbage = "garbage-token-" + "x" * 40
            for token in (garbage, platform.mint("install")):
                await platform.send(
                    agent_pb2.AgentCommand(
                        update=agent_pb2.AgentUpdateRequest(tag="9.9", timeoutSeconds=60, token=token)
                    )
                )
            await platform.wait_unary("AbortUpdate", count=2, within_s=10)
            target = common_pb2.ContainerOrPrefix(
                container=common_pb2.ContainerIdentifier(prefix="p", name="web")
            )
            await platform.send(
                agent_pb2.AgentCommand(listSecrets=agent_pb2.ListSecretsRequest(target=target))
            )
            keys = await platform.wait_unary("SecretList", within_s=10)
            assert list(keys.message.keys) == ["DB"]
            await platform.send(
                agent_pb2.AgentCommand(
                    containerInspect=agent_pb2.ContainerInspectRequest(
                        container=common_pb2.ContainerIdentifier(prefix="p", name="missing")
                    )
                )
            )
            await platform.wait_unary("CommandError", within_s=10)
            process.send_signal(signal.SIGTERM)
            out, err = await wait_event(output, 30, "the agent process to exit")
        finally:
            if process.returncode is None:
                process.kill()
                await output
        secret_key = (data / "secret.key").read_text()

    said = [out.decode(errors="replace"), err.decode(errors="replace")]
    for record in platform.streams:
        said += [str(message) for message in record.messages]
    for call in platform.unary:
        said.append(str(call.message))
    haystack = "\n".join(said)
    assert "deployment" in haystack.lower() and len(out + err) > 1000  # there was output to search

    needles = {"secret": SECRET, "foreign secret": FOREIGN_SECRET, "registry password": REGISTRY_PASSWORD}
    for name, token in {
        "install token": install,
        "connection token": connection,
        "other node's token": other_node,
        "garbage token": garbage,
    }.items():
        needles[name] = token
        if token.count(".") == 2:
            needles[f"{name} signature"] = token.rsplit(".", 1)[1]
            nonce = jwt.decode(token, options={"verify_signature": False}).get("nonce")
            if nonce:
                needles[f"{name} nonce"] = nonce
    key_body = [line for line in secret_key.splitlines() if len(line) > 40]
    needles["secret key material"] = key_body[len(key_body) // 2]
    leaked = [name for name, value in needles.items() if value in haystack]
    assert leaked == [], f"found in the agent's output: {leaked}"
