"""The agent's OpenPGP key generated in a process of its own (``CHILD``): it prints the armored
secret key, the armored public key and the fingerprint, separated by NUL characters.

A first start (a fresh install included) needs a new key before its first ``Connect``, but an
idle agent needs none of the OpenPGP library that makes it: loaded in the agent, the library
stays mapped (about 5 MB resident) until the agent restarts. Generated here, the agent loads it
only when a command first decrypts or encrypts (see ``AgentKey``). The child costs about 20 ms
(the interpreter, the library and one key: this module imports nothing else) and runs while the
engine is probed. Nothing here logs: the secret key goes to stdout, read by the parent only.
"""

from __future__ import annotations

import sys

KEY_USER_ID = "dyrector.io agent <hello@dyrector.io>"
SEPARATOR = "\0"
CHILD = "import berth.agent.keygen as keygen; keygen.main()"  # python -c: runpy's imports spared


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


def main() -> None:
    made = generate()
    sys.stdout.write(SEPARATOR.join((made["secret"], made["public_key"], made["fingerprint"])))


def parse(output: str) -> dict[str, str]:
    """What ``main`` printed; ValueError when it is not that."""
    secret, public_key, fingerprint = output.split(SEPARATOR)
    if not (secret and public_key and fingerprint):
        raise ValueError("the key generator printed an empty field")
    return {"secret": secret, "public_key": public_key, "fingerprint": fingerprint}
