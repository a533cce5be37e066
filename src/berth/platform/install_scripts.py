"""Renders the install scripts from the templates in ``install-scripts/`` (owned by the shipping
work). The platform never writes templates itself.

Every placeholder names the language of the text it is pasted into, ``@@LANGUAGE:KEY@@``, and each
language has one escaper that turns any accepted value into a literal of that language:

``sh``          a POSIX sh single-quoted word (``'`` becomes ``'\\''``)
``ps1``         a PowerShell single-quoted string (every kind of single quote doubled)
``yaml``        a YAML double-quoted scalar, ASCII only (everything else escaped)
``sh-envfile``  a systemd EnvironmentFile value, itself carried in a sh word (the systemd installer
                writes it into ``/etc/berth/agent.env``)
``k8sname``     no escaping at all: the value must already be a short DNS label (used inside
                Kubernetes names such as ``@@k8sname:WORKLOAD_NAME@@-agent``)

There is no raw paste: a placeholder without a known language, or one on a comment line, fails the
rendering as a server misconfiguration. Values are checked before any template is read: text with
control characters, bidirectional-text controls or lone surrogates is refused with a
``RefusedValue`` (a ``ValueError`` naming the field), and so is a ``rootPath`` that is not an
absolute path of plain characters.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from berth.platform.problems import ServerMisconfigured

TEMPLATES: Final = {
    ("docker", "shell"): ("install-docker.sh.tmpl", "text/x-shellscript; charset=utf-8"),
    ("docker", "powershell"): ("install-docker.ps1.tmpl", "text/plain; charset=utf-8"),
    ("docker", "systemd"): ("install-systemd.sh.tmpl", "text/x-shellscript; charset=utf-8"),
    ("k8s", "shell"): ("install-k8s.yaml.tmpl", "application/yaml; charset=utf-8"),
}
DEFAULT_DATA_DIR: Final = "/srv/berth"
WORKLOAD_NAME: Final = "berth"

MAX_NODE_NAME_CHARS: Final = 1024
MAX_TOKEN_CHARS: Final = 8192
MAX_ROOT_PATH_CHARS: Final = 1024
MAX_CONFIG_CHARS: Final = 1024  # the image reference and the advertised address
MAX_CA_PEM_CHARS: Final = 64 * 1024


class RefusedValue(ValueError):
    """A value that cannot go into an install script; ``field`` names it as the API does."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# -- escapers, one per target language -------------------------------------------------------------


def sh_literal(value: str) -> str:
    """A POSIX sh word whose value is exactly ``value``: nothing inside single quotes is special,
    and a single quote is closed, escaped and reopened."""
    _refuse_nul(value)
    return "'" + value.replace("'", "'\\''") + "'"


# PowerShell's tokenizer treats the typographic single quotes like the ASCII one.
_PS_SINGLE_QUOTES: Final = frozenset("'\u2018\u2019\u201a\u201b")


def powershell_literal(value: str) -> str:
    """A PowerShell single-quoted (verbatim) string: only a single quote is special there, and a
    doubled one stands for itself."""
    _refuse_nul(value)
    return "'" + "".join(c + c if c in _PS_SINGLE_QUOTES else c for c in value) + "'"


def yaml_scalar(value: str) -> str:
    """A YAML double-quoted scalar in plain ASCII: quote and backslash escaped, every character
    outside printable ASCII written as a ``\\x``/``\\u``/``\\U`` escape (so no YAML indicator, line
    break or encoding question can arise)."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code <= 0x7E:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("a lone surrogate cannot be written as YAML")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_ENV_BARE: Final = re.compile(r"[A-Za-z0-9_.,:/@+=-]*")
_ENV_DOUBLE_QUOTE_SPECIAL: Final = re.compile(r'([\\"`$])')


def systemd_env_value(value: str) -> str:
    """A value for a systemd ``EnvironmentFile=`` line (``KEY=<this>``). Plain values stay bare;
    anything else is double-quoted with ``\\ " ` $`` escaped, which systemd reads back verbatim."""
    _refuse_nul(value)
    if _ENV_BARE.fullmatch(value):
        return value
    return '"' + _ENV_DOUBLE_QUOTE_SPECIAL.sub(r"\\\1", value) + '"'


_DNS_LABEL: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,38}[a-z0-9])?")


def k8s_name_part(value: str) -> str:
    """Pasted as is, so only a short DNS label is accepted (room for suffixes like -install-token
    within Kubernetes' 63 characters)."""
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a DNS label of at most 40 characters")
    return value


LANGUAGES: Final[Mapping[str, Callable[[str], str]]] = {
    "sh": sh_literal,
    "ps1": powershell_literal,
    "yaml": yaml_scalar,
    "sh-envfile": lambda value: sh_literal(systemd_env_value(value)),
    "k8sname": k8s_name_part,
}


def _refuse_nul(value: str) -> None:
    if "\0" in value:
        raise ValueError("a NUL character cannot be written into a script")


# -- values ---------------------------------------------------------------------------------------

# Characters that make text display differently from what it is (the "Trojan Source" family): a
# script someone reads before running it must look like what it does.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_text(field: str, value: str, max_chars: int) -> str:
    """Refuses what no script should carry: lone surrogates (not UTF-8), control characters
    (including NUL, CR and LF), line and paragraph separators, bidirectional-text controls,
    non-characters, and more than ``max_chars`` characters."""
    if len(value) > max_chars:
        raise RefusedValue(field, f"longer than {max_chars} characters")
    for index, char in enumerate(value):
        code = ord(char)
        category = unicodedata.category(char)
        if 0xD800 <= code <= 0xDFFF:
            raise RefusedValue(field, f"not valid UTF-8 (a lone surrogate at position {index})")
        if category in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS or char == "\ufeff":
            raise RefusedValue(field, f"contains the control character U+{code:04X} at position {index}")
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            raise RefusedValue(field, f"contains the non-character U+{code:04X} at position {index}")
    return value


_ROOT_PATH: Final = re.compile(r"(?:/[A-Za-z0-9_.-]+)+")
# A data folder is made 0700 and owned by the agent: never one of the system's own folders.
_SYSTEM_TREES: Final = frozenset(
    ["bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys", "usr"]
)
_SYSTEM_FOLDERS: Final = frozenset(
    ["/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp"]
)


def check_root_path(value: str) -> str:
    """The agent's data folder on the node: ``""`` means the default (``/srv/berth``); otherwise an
    absolute path of ``[A-Za-z0-9_./-]`` without ``.`` or ``..`` segments, at most
    ``MAX_ROOT_PATH_CHARS`` long, and not a system folder. A trailing ``/`` is dropped."""
    field = "rootPath"
    if value == "":
        return DEFAULT_DATA_DIR
    check_text(field, value, MAX_ROOT_PATH_CHARS)
    path = value.rstrip("/") if len(value) > 1 else value
    if not _ROOT_PATH.fullmatch(path):
        raise RefusedValue(
            field,
            f"must be an absolute path of letters, digits and _ . - separated by single '/' (got {value!r})",
        )
    segments = path.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        raise RefusedValue(field, f"must not contain '.' or '..' segments (got {value!r})")
    if segments[0] in _SYSTEM_TREES or path in _SYSTEM_FOLDERS:
        raise RefusedValue(field, f"{path} is a system folder; choose a folder of its own")
    return path


# Docker's reference grammar in short: a name, an optional :tag and an optional @digest.
_IMAGE_REFERENCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def check_image_reference(value: str) -> str:
    """The agent image goes on the container CLI's command line: only a plain image reference
    (no option-like or quoted text) is accepted."""
    check_text("image", value, MAX_CONFIG_CHARS)
    if not _IMAGE_REFERENCE.fullmatch(value):
        raise RefusedValue("image", f"{value!r} is not an image reference (registry/name:tag@digest)")
    return value


def check_ca_pem(value: str) -> str:
    """The platform's own CA certificate: PEM is printable ASCII in lines."""
    if len(value) > MAX_CA_PEM_CHARS:
        raise RefusedValue("caPem", f"longer than {MAX_CA_PEM_CHARS} characters")
    for line in value.replace("\r\n", "\n").split("\n"):
        if not all(0x20 <= ord(c) <= 0x7E for c in line):
            raise RefusedValue("caPem", "is not PEM text (printable ASCII lines)")
    return value.replace("\r\n", "\n")


def is_loopback_address(address: str) -> bool:
    """``127.0.0.1:5000``, ``[::1]:5000``, ``localhost:5000`` (and the same without a port)."""
    host = address
    if host.startswith("["):
        host, closed, _ = host[1:].partition("]")
        if not closed:
            return False
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- templates ------------------------------------------------------------------------------------

_DELIMITED: Final = re.compile(r"@@(.*?)@@")
_PLACEHOLDER: Final = re.compile(r"(?P<language>[a-z][a-z0-9-]*):(?P<key>[A-Z][A-Z0-9_]*)")
_COMMENT_BEFORE: Final = re.compile(r"(?:^|\s)#")


def fill_template(name: str, template: str, values: Mapping[str, str]) -> str:
    """Replaces every ``@@language:KEY@@`` with the value escaped for that language, in one pass
    (a value is never scanned again). A placeholder without a known language, with an unknown key,
    or after a ``#`` on its line is a fault of the template: ``ServerMisconfigured``."""

    def fault(line_no: int, problem: str) -> ServerMisconfigured:
        return ServerMisconfigured(f"Install script template {name}, line {line_no}: {problem}")

    lines = template.splitlines(keepends=True)
    for line_no, line in enumerate(lines, start=1):
        found = list(_DELIMITED.finditer(line))
        if not found:
            if "@@" in line:
                raise fault(line_no, "an unterminated @@ placeholder")
            continue
        pieces: list[str] = []
        end = 0
        for match in found:
            placeholder = _PLACEHOLDER.fullmatch(match.group(1))
            if placeholder is None or placeholder["language"] not in LANGUAGES:
                raise fault(
                    line_no,
                    f"{match.group(0)} does not name its language (one of {', '.join(sorted(LANGUAGES))})",
                )
            if placeholder["key"] not in values:
                raise fault(line_no, f"{match.group(0)} has no value")
            if _COMMENT_BEFORE.search(line, 0, match.start()):
                raise fault(line_no, f"{match.group(0)} is inside a comment")
            escape = LANGUAGES[placeholder["language"]]
            pieces.append(line[end : match.start()])
            try:
                pieces.append(escape(values[placeholder["key"]]))
            except ValueError as err:
                raise RefusedValue(placeholder["key"], str(err)) from None
            end = match.end()
        rest = line[end:]
        if "@@" in rest:
            raise fault(line_no, "an unterminated @@ placeholder")
        pieces.append(rest)
        lines[line_no - 1] = "".join(pieces)
    return "".join(lines)


def find_templates_dir(configured: Path | None = None) -> Path:
    """``--install-scripts-dir``, then ``BERTH_INSTALL_SCRIPTS_DIR``, then the packaged copy, then
    ``<repo>/install-scripts`` next to the source tree."""
    if configured is not None:
        return configured
    from_env = os.environ.get("BERTH_INSTALL_SCRIPTS_DIR")
    if from_env:
        return Path(from_env)
    package = Path(__file__).resolve().parents[1]
    packaged = package / "install_scripts"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "install-scripts"


@dataclass(frozen=True)
class InstallScripts:
    """The platform's side of the install scripts. ``advertise``, ``ca_pem`` and ``image`` come
    from the platform's configuration and are checked when it is built (``RefusedValue``)."""

    templates_dir: Path
    base_url: str
    team: str
    advertise: str
    ca_pem: str
    insecure: bool
    image: str
    workload_name: str = WORKLOAD_NAME

    def __post_init__(self) -> None:
        check_text("advertise", self.advertise, MAX_CONFIG_CHARS)
        check_image_reference(self.image)
        check_ca_pem(self.ca_pem)
        try:
            k8s_name_part(self.workload_name)
        except ValueError as err:
            raise RefusedValue("workloadName", str(err)) from None

    def _template(self, node_type: str, script_type: str) -> tuple[Path, str]:
        file_name, media_type = TEMPLATES[(node_type, script_type)]
        return self.templates_dir / file_name, media_type

    def require(self, node_type: str, script_type: str) -> None:
        path, _ = self._template(node_type, script_type)
        if not path.is_file():
            raise ServerMisconfigured(
                f"Install script template {path.name} is missing in {self.templates_dir}"
            )

    def script_url(self, node_id: str) -> str:
        return f"{self.base_url}/api/{self.team}/nodes/{node_id}/script"

    def one_line_command(self, node_id: str, node_type: str, script_type: str) -> str:
        url = sh_literal(self.script_url(node_id))
        if node_type == "k8s":
            return f"curl -sSfL {url} | kubectl apply -f -"
        if script_type == "powershell":
            return (
                f"Invoke-WebRequest -UseBasicParsing -Uri {powershell_literal(self.script_url(node_id))} "
                "| Select-Object -ExpandProperty Content | Invoke-Expression"
            )
        if script_type == "systemd":
            return f"curl -sSfL {url} | sudo sh -"
        return f"curl -sSfL {url} | sh -"

    def values(self, *, node_name: str, token: str, root_path: str) -> dict[str, str]:
        """The checked values by placeholder key. The agent's ``NAME`` is the node name in lower
        case without white space (as before)."""
        check_text("name", node_name, MAX_NODE_NAME_CHARS)
        check_text("token", token, MAX_TOKEN_CHARS)
        data_dir = check_root_path(root_path)
        ca_pem = "" if self.insecure else check_ca_pem(self.ca_pem)
        return {
            "GRPC_TOKEN": token,
            "NODE_NAME": "".join(node_name.lower().split()),
            "PLATFORM_ADDRESS": self.advertise,
            "PLATFORM_LOOPBACK": "true" if is_loopback_address(self.advertise) else "false",
            "CA_PEM": ca_pem.rstrip("\n"),  # the scripts add the final line break
            # one line, for the k8s manifest's ConfigMap binaryData
            "CA_PEM_B64": base64.b64encode(ca_pem.encode()).decode(),
            "INSECURE": "true" if self.insecure else "false",
            "IMAGE": self.image,
            "WORKLOAD_NAME": self.workload_name,
            "DATA_DIR": data_dir,
        }

    def render(
        self, *, node_name: str, node_type: str, script_type: str, token: str, root_path: str
    ) -> tuple[str, str]:
        """The script text and its media type. ``RefusedValue`` (a ``ValueError``) for a value
        that cannot go into a script, ``ServerMisconfigured`` for a missing or faulty template.
        Blocking file read of a small template (a few KiB)."""
        if (node_type, script_type) not in TEMPLATES:
            raise RefusedValue("scriptType", f"no {script_type} install script for {node_type} nodes")
        values = self.values(node_name=node_name, token=token, root_path=root_path)
        path, media_type = self._template(node_type, script_type)
        try:
            template = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ServerMisconfigured(
                f"Install script template {path.name} is missing in {self.templates_dir}"
            ) from None
        return fill_template(path.name, template, values), media_type
