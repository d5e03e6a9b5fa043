"""Server settings from command-line flags and CONSILIUM_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sfu.adapters.aiortc_adapter import IceServer


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # None: every interface address plus loopback. A list restricts ICE to those addresses.
    ice_hosts: list[str] | None = None
    ice_servers: list[IceServer] = field(default_factory=list)
    secret: str | None = None
    api_key: str | None = None
    max_participants: int = 8
    tls_cert: str | None = None
    tls_key: str | None = None
    token_ttl_s: int = 3600
    # Write every subscriber's transport-wide feedback here (JSON lines) for offline analysis.
    bwe_trace_dir: str | None = None
    # Recordings go to <dir>/<room>/<UTC start>/; the audit trail to <dir>/audit.jsonl.
    recordings_dir: str = "recordings"
    # Embedded database (audit trail): <dir>/consilium.db.
    data_dir: str = "data"
    # NACK/RTX loss repair on both legs; switched off only to measure what it buys.
    nack: bool = True
    # Largest file one tus upload may carry (Tus-Max-Size); a zipped CT study is a few GB.
    max_upload_bytes: int = 8 * 1024**3
    # A joined socket that drops without leave keeps its session (media flowing) this long for
    # the client to resume it; 0 removes the participant at once.
    resume_grace_s: float = 20.0

    @property
    def dev_mode(self) -> bool:
        """No secret configured: the server mints development tokens for the web page."""
        return self.secret is None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def parse_turn_url(value: str) -> IceServer:
    """``turn:user:pass@host:3478?transport=udp`` → an ICE server entry with credentials."""
    scheme, _, rest = value.partition(":")
    if scheme not in ("turn", "turns", "stun"):
        raise ValueError(f"unsupported ICE server URL {value!r} (expected turn:, turns: or stun:)")
    username = credential = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        username, _, credential = userinfo.partition(":")
    if not urlsplit(f"//{rest.split('?', 1)[0]}").hostname:
        raise ValueError(f"ICE server URL {value!r} has no host")
    return IceServer(urls=[f"{scheme}:{rest}"], username=username, credential=credential)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consilium", description="Consilium consultation SFU")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the signaling service and SFU")
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP listen port (default 8080)")
    serve.add_argument(
        "--ice-host",
        action="append",
        dest="ice_hosts",
        metavar="ADDR",
        help="address for ICE host candidates (repeatable; default: all, loopback included)",
    )
    serve.add_argument(
        "--turn-server",
        action="append",
        dest="turn_servers",
        metavar="URL",
        help="TURN/STUN server for clients and the SFU, e.g. turn:user:pass@turn.example:3478",
    )
    serve.add_argument(
        "--secret", help="JWT signing secret; without it the server runs in dev mode"
    )
    serve.add_argument("--api-key", help="bearer key for the REST API")
    serve.add_argument("--max-participants", type=int, help="per room (default 8)")
    serve.add_argument(
        "--tls-cert", help="PEM certificate: serve HTTPS (needed for cameras off localhost)"
    )
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--bwe-trace-dir",
        metavar="DIR",
        help="record each subscriber's bandwidth feedback there (JSON lines, for QA)",
    )
    serve.add_argument(
        "--no-nack",
        action="store_true",
        default=None,
        help="do not repair loss with NACK/RTX (for QA comparisons only)",
    )
    serve.add_argument(
        "--recordings-dir",
        metavar="DIR",
        help="where recordings and the audit log are written (default ./recordings)",
    )
    serve.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    serve.add_argument(
        "--max-upload-bytes", type=int, help="largest shared file in bytes (default 8 GiB)"
    )
    serve.add_argument(
        "--resume-grace-s",
        type=float,
        metavar="S",
        help="keep a dropped participant's session this long for a resume (default 20; 0: off)",
    )
    serve.add_argument("--log-level", default="INFO")
    audit = sub.add_parser("audit", help="inspect the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 if broken")
    verify.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    verify.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head printed earlier by 'consilium audit head': also finds a trail cut short",
    )
    verify.add_argument("--log-level", default="WARNING")
    head = audit_sub.add_parser(
        "head", help="print the last entry as SEQ:HASH, to keep outside the server (an anchor)"
    )
    head.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    head.add_argument("--log-level", default="WARNING")
    return parser


DATA_DIR_HELP = "where the embedded database lives (default ./data; env CONSILIUM_DATA_DIR)"


def data_dir_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str:
    flag = getattr(args, "data_dir", None)
    return str(flag) if flag else env.get("CONSILIUM_DATA_DIR") or Settings.data_dir


def settings_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """Flags win over environment variables, which win over defaults."""

    def pick(flag: object, name: str) -> str | None:
        if flag is not None:
            return str(flag)
        return env.get(f"CONSILIUM_{name}") or None

    s = Settings()
    s.host = pick(args.host, "HOST") or s.host
    s.port = int(pick(args.port, "PORT") or s.port)
    ice_hosts: Sequence[str] | None = args.ice_hosts
    if ice_hosts is None and env.get("CONSILIUM_ICE_HOSTS"):
        ice_hosts = [h.strip() for h in env["CONSILIUM_ICE_HOSTS"].split(",") if h.strip()]
    s.ice_hosts = list(ice_hosts) if ice_hosts else None
    turn: Sequence[str] = args.turn_servers or [
        u.strip() for u in env.get("CONSILIUM_TURN_SERVERS", "").split(",") if u.strip()
    ]
    s.ice_servers = [parse_turn_url(u) for u in turn]
    s.secret = pick(args.secret, "SECRET")
    s.api_key = pick(args.api_key, "API_KEY")
    s.max_participants = int(pick(args.max_participants, "MAX_PARTICIPANTS") or s.max_participants)
    s.tls_cert = pick(args.tls_cert, "TLS_CERT")
    s.tls_key = pick(args.tls_key, "TLS_KEY")
    s.bwe_trace_dir = pick(getattr(args, "bwe_trace_dir", None), "BWE_TRACE_DIR")
    s.recordings_dir = (
        pick(getattr(args, "recordings_dir", None), "RECORDINGS_DIR") or s.recordings_dir
    )
    s.data_dir = data_dir_from(args, env)
    if getattr(args, "no_nack", None):
        s.nack = False
    elif env.get("CONSILIUM_NACK", "").strip().lower() in ("0", "off", "false", "no"):
        s.nack = False
    s.max_upload_bytes = int(
        pick(getattr(args, "max_upload_bytes", None), "MAX_UPLOAD_BYTES") or s.max_upload_bytes
    )
    if s.max_upload_bytes < 1:
        raise ValueError("--max-upload-bytes must be at least 1")
    grace = pick(getattr(args, "resume_grace_s", None), "RESUME_GRACE_S")
    s.resume_grace_s = float(grace) if grace is not None else s.resume_grace_s
    if not 0 <= s.resume_grace_s <= 3600:
        raise ValueError("--resume-grace-s must be from 0 to 3600")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if s.max_participants < 1:
        raise ValueError("--max-participants must be at least 1")
    return s
