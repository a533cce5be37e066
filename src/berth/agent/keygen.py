"""The agent's OpenPGP key generated in a process of its own: ``python -m berth.agent.keygen``
prints the armored secret key, the armored public key and the fingerprint as one JSON object.

A first start (a fresh install included) needs a new key before its first ``Connect``, but an
idle agent needs none of the OpenPGP library that makes it: loaded in the agent, the library
stays mapped (about 5 MB resident) until the agent restarts. Generated here, the agent loads it
only when a command first decrypts or encrypts (see ``AgentKey``). The child costs about 10 ms
(the interpreter without ``site``-heavy imports, the library and one key) and runs while the
engine is probed. Nothing here logs: the secret key goes to stdout, read by the parent only.
"""

from __future__ import annotations

import json
import sys
from typing import Final

KEY_USER_ID: Final = "dyrector.io agent <hello@dyrector.io>"


def generate() -> dict[str, str]:
    """An RFC 4880 v4 key with an Ed25519 primary and a Curve25519 encryption subkey."""
    import pysequoia

    secret_key = pysequoia.Tsk.generate(
        KEY_USER_ID, profile=pysequoia.Profile.RFC4880, cipher_suite=pysequoia.CipherSuite.Cv25519
    )
    certificate = secret_key.extract_certificate()
    return {
        "secret": pysequoia.armor(bytes(secret_key), pysequoia.ArmorKind.SecretKey),
        "public_key": pysequoia.armor(bytes(certificate), pysequoia.ArmorKind.PublicKey),
        "fingerprint": str(certificate.fingerprint),
    }


if __name__ == "__main__":
    json.dump(generate(), sys.stdout)
