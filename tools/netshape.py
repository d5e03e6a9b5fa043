"""A real, bandwidth-capped network link to a separate network namespace (veth + tc tbf).

This machine's kernel has no netem, but it has veth and the ``tbf`` rate limiter. A
:class:`CappedNamespace` starts a tiny holder process in a new network namespace, links it to the
current namespace with a veth pair and shapes each direction with ``tbf``::

    our namespace (SFU listens on host_addr)  <-- veth -->  capped namespace (peer_addr)
        egress: set_downlink() cap                              egress: set_uplink() cap

Anything started through :meth:`CappedNamespace.command` or a :meth:`wrapper_script` (e.g.
Chromium for Playwright) sees only ``lo`` and the veth end with ``peer_addr``: it reaches our
side at ``host_addr`` only, so a server must listen (and offer ICE candidates) on ``host_addr``.

Only use it inside a private network namespace (``tools/in_netns.sh``): it adds an interface and
a route to the *current* namespace, and :meth:`CappedNamespace.unavailable_reason` refuses the
machine's own one. Manual use::

    bash tools/in_netns.sh .venv/bin/python -m tools.netshape --rate 300k -- <command...>

Two instances can coexist (interface names are unique), but each needs its own subnet.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

MTU = 1500
# tbf counts whole frames: the Ethernet header comes on top of the IP MTU.
_FRAME_BYTES = MTU + 14
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_TOOLS = ("ip", "tc", "nsenter", "unshare")
# Our interface names: up to 5 label characters, "-", 6 hex digits, h(ost) or p(eer) = 13 <= 15.
_IFNAME_RE = re.compile(r"^[a-z0-9]{1,5}-[0-9a-f]{6}[hp]$")
_HOLDER_START_TIMEOUT_S = 5.0
_CMD_TIMEOUT_S = 10.0


class NetshapeError(RuntimeError):
    """A namespace, link or qdisc operation failed."""


def run_checked(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_CMD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise NetshapeError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _effective_caps() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def netns_id(pid: int | str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _in_private_netns() -> bool:
    """True when the current network namespace is not the machine's (or container's) own."""
    try:
        return netns_id(1) != netns_id()
    except OSError:
        pass
    # /proc/1 is unreadable when pid 1 holds capabilities we lack: judge by the interfaces,
    # which must be loopback plus veths made by this module (tools/in_netns.sh has only lo).
    return all(name == "lo" or _IFNAME_RE.match(name) for _, name in socket.if_nameindex())


@functools.cache
def _probe(netns: str) -> str | None:
    """Create a veth pair with a tbf on it and delete it again; the reason it failed, or None."""
    del netns  # only the cache key: the answer belongs to one namespace
    a, b = ifnames("probe")
    try:
        run_checked(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    except (NetshapeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a veth pair: {exc}"
    try:
        run_checked(["tc", "qdisc", "replace", "dev", a, "root", *_tbf_args(1_000_000, 200)])
    except (NetshapeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot add a tbf qdisc: {exc}"
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)
    return None


def namespace_unavailable_reason(tools: tuple[str, ...]) -> str | None:
    """Why a holder namespace linked to ours cannot be made here (None: it can).

    Shared by every link kind (veth here, TUN in tools/impair.py): Linux, the command-line
    tools, the capabilities, and never the machine's own network namespace.
    """
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (iproute2, util-linux)"
    caps = _effective_caps()
    if not caps & (1 << _CAP_NET_ADMIN) or not caps & (1 << _CAP_SYS_ADMIN):
        return "needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run through tools/in_netns.sh)"
    if not _in_private_netns():
        return "refusing to touch the machine's own network: run through tools/in_netns.sh"
    return None


def start_holder() -> subprocess.Popen[bytes]:
    """Start a process in a new network namespace that lives as long as we hold its stdin.

    We hold CAP_SYS_ADMIN here (also as root of tools/in_netns.sh's user namespace), so a plain
    `unshare -n` works; -r would add a user namespace nsenter -n cannot configure. The holder
    is `cat` on a pipe from us: if this process dies without cleaning up, cat reads EOF and
    exits, the namespace goes and every interface in it with it.
    """
    holder = subprocess.Popen(
        ["unshare", "-n", "--", "cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ours = netns_id()
    deadline = time.monotonic() + _HOLDER_START_TIMEOUT_S
    # unshare(2) runs after Popen returns: wait until the holder really is elsewhere.
    while True:
        if holder.poll() is not None:
            err = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
            stop_holder(holder)
            raise NetshapeError(f"unshare -n failed ({holder.returncode}): {err.strip()}")
        try:
            if netns_id(holder.pid) != ours:
                return holder
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_holder(holder)
            raise NetshapeError("the namespace holder did not start in time")
        time.sleep(0.005)


def stop_holder(holder: subprocess.Popen[bytes]) -> None:
    """End a holder from start_holder() (its namespace goes with it) and reap it."""
    for stream in (holder.stdin, holder.stderr):
        if stream is not None:
            stream.close()
    try:
        holder.wait(timeout=2)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


def nsenter_command(pid: int, argv: list[str]) -> list[str]:
    """``argv`` prefixed so that it runs in the network namespace of process ``pid``."""
    nsenter = shutil.which("nsenter") or "nsenter"
    return [nsenter, "-t", str(pid), "-n", "--", *argv]


def write_wrapper_script(pid: int, executable: str, directory: Path, stem: str, what: str) -> Path:
    """An executable script ``directory/stem-<name>`` that execs ``executable "$@"`` inside.

    Meant for ``executable_path`` of Playwright's Chromium: sh and nsenter both exec, so the
    browser keeps its PID, stdio and inherited fds (Playwright's pipe on fds 3 and 4).
    """
    resolved = shutil.which(executable) if os.sep not in executable else executable
    if resolved is None:
        raise NetshapeError(f"{executable} not found")
    script = Path(directory) / f"{stem}-{Path(resolved).name}"
    script.write_text(
        "#!/bin/sh\n"
        f"# {Path(resolved).name} inside {what}\n"
        f'exec {shlex.join(nsenter_command(pid, [str(Path(resolved).resolve())]))} "$@"\n'
    )
    script.chmod(0o755)
    return script


def ifnames(label: str) -> tuple[str, str]:
    """A fresh (ours, theirs) interface-name pair that _in_private_netns() recognises."""
    clean = re.sub(r"[^a-z0-9]", "", label.lower())[:5] or "ns"
    token = secrets.token_hex(3)
    return f"{clean}-{token}h", f"{clean}-{token}p"


def _tbf_args(rate_bps: int, queue_ms: int) -> list[str]:
    if rate_bps <= 0:
        raise ValueError(f"rate must be positive (or None for no cap): {rate_bps}")
    if queue_ms <= 0:
        raise ValueError(f"queue_ms must be positive: {queue_ms}")
    # Burst: 5 ms at line rate, but at least two full frames or tbf drops (or stalls) on them.
    burst = max(rate_bps * 5 // 8000, 2 * _FRAME_BYTES)
    # Queue: what drains in queue_ms at the cap, on top of the burst (as tc's "latency" does).
    limit = burst + max(rate_bps * queue_ms // 8000, _FRAME_BYTES)
    return ["tbf", "rate", f"{rate_bps}bit", "burst", str(burst), "limit", str(limit)]


class NamespaceContext:
    """Sync and async ``with`` around a namespace's ``__enter__`` and ``close``.

    The async forms run them in a thread: creating links and holders waits on ``ip``.
    """

    _holder: subprocess.Popen[bytes] | None = None  # lives in the namespace it created

    def __enter__(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @staticmethod
    def unavailable_reason() -> str | None:
        raise NotImplementedError

    @classmethod
    def available(cls) -> bool:
        return cls.unavailable_reason() is None

    @property
    def pid(self) -> int:
        """PID of the holder process; the namespace is its network namespace."""
        if self._holder is None:
            raise NetshapeError("the namespace is not running (use it as a context manager)")
        return self._holder.pid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)


class CappedNamespace(NamespaceContext):
    """A network namespace linked to ours by a veth pair whose directions can be rate-capped.

    ``host_addr`` is on our side (servers listen there), ``peer_addr`` inside the namespace.
    Sync context manager; ``async with`` works too (setup runs in a thread). Each call is a few
    short ``ip``/``tc`` subprocesses (milliseconds), so the setters are fine from async code.
    """

    def __init__(
        self,
        name: str = "capped",
        host_addr: str = "10.77.0.1",
        peer_addr: str = "10.77.0.2",
        prefix: int = 24,
    ) -> None:
        self.name = name
        self.host_addr = host_addr
        self.peer_addr = peer_addr
        self.prefix = prefix
        self.host_if, self.peer_if = ifnames(name)
        self.downlink_bps: int | None = None
        self.uplink_bps: int | None = None
        self._holder: subprocess.Popen[bytes] | None = None
        self._linked = False

    # -- capability check -------------------------------------------------------------------

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this cannot work here, or None when it can."""
        return namespace_unavailable_reason(_TOOLS) or _probe(netns_id())

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> CappedNamespace:
        if self._holder is not None:
            raise NetshapeError("already entered")
        try:
            self._start_holder()
            self._link()
        except BaseException:
            self.close()
            raise
        return self

    def _start_holder(self) -> None:
        self._holder = start_holder()

    def _link(self) -> None:
        for _ in range(3):
            try:
                run_checked(
                    ["ip", "link", "add", self.host_if, "type", "veth"]
                    + ["peer", "name", self.peer_if, "netns", str(self.pid)]
                )
                break
            except NetshapeError as exc:
                if "exists" not in str(exc):
                    raise
                self.host_if, self.peer_if = ifnames(self.name)
        else:
            raise NetshapeError("no free interface name")
        self._linked = True
        # addrgenmode none: no IPv6 link-local addresses, so browsers gather only peer_addr and
        # no router solicitations share the capped link.
        run_checked(
            ["ip", "-batch", "-"],
            f"link set {self.host_if} addrgenmode none\n"
            f"addr add {self.host_addr}/{self.prefix} dev {self.host_if}\n"
            f"link set {self.host_if} up\n",
        )
        run_checked(
            self.command(["ip", "-batch", "-"]),
            "link set lo up\n"
            f"link set {self.peer_if} addrgenmode none\n"
            f"addr add {self.peer_addr}/{self.prefix} dev {self.peer_if}\n"
            f"link set {self.peer_if} up\n",
        )

    def close(self) -> None:
        """Delete the link and stop the holder; safe to call more than once."""
        try:
            if self._linked:
                self._linked = False
                # Deleting one end deletes both, and their qdiscs with them.
                subprocess.run(
                    ["ip", "link", "del", self.host_if],
                    capture_output=True,
                    timeout=_CMD_TIMEOUT_S,
                    check=False,
                )
        finally:
            holder, self._holder = self._holder, None
            self.downlink_bps = self.uplink_bps = None
            if holder is not None:
                stop_holder(holder)

    # -- shaping ----------------------------------------------------------------------------

    def set_downlink(self, rate_bps: int | None, queue_ms: int = 200) -> None:
        """Cap traffic towards the namespace (our veth's egress); None lifts the cap."""
        self._shape(["tc"], self.host_if, self.downlink_bps, rate_bps, queue_ms)
        self.downlink_bps = rate_bps

    def set_uplink(self, rate_bps: int | None, queue_ms: int = 200) -> None:
        """Cap traffic out of the namespace (its veth's egress); None lifts the cap."""
        self._shape(self.command(["tc"]), self.peer_if, self.uplink_bps, rate_bps, queue_ms)
        self.uplink_bps = rate_bps

    def _shape(
        self, tc: list[str], dev: str, current: int | None, rate_bps: int | None, queue_ms: int
    ) -> None:
        if not self._linked:
            raise NetshapeError("the namespace is not running (use it as a context manager)")
        if rate_bps is not None:
            # replace: changes a live cap without a gap and without dropping the queue's state.
            run_checked(
                [*tc, "qdisc", "replace", "dev", dev, "root", *_tbf_args(rate_bps, queue_ms)]
            )
        elif current is not None:
            run_checked([*tc, "qdisc", "del", "dev", dev, "root"])

    def downlink_drops(self) -> int:
        """Packets the downlink's queue has dropped since its cap was (re)applied (0: no cap)."""
        if not self._linked or self.downlink_bps is None:
            return 0
        out = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", self.host_if],
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT_S,
            check=False,
        ).stdout
        match = re.search(r"dropped (\d+)", out)
        return int(match.group(1)) if match else 0

    # -- running things inside --------------------------------------------------------------

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside the capped namespace."""
        return nsenter_command(self.pid, argv)

    def wrapper_script(self, executable: str, directory: Path) -> Path:
        """An executable script that execs ``executable "$@"`` inside the namespace (see
        write_wrapper_script: meant for Playwright's ``executable_path``)."""
        what = f"netshape namespace {self.name!r}"
        return write_wrapper_script(self.pid, executable, directory, self.host_if[:-1], what)


# -- CLI -------------------------------------------------------------------------------------


def parse_rate(text: str) -> int | None:
    """'300k' -> 300000 bit/s, '2.5M' -> 2500000, 'none' -> None (decimal units, bits)."""
    if text.lower() in ("none", "off", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)(?:bit|bps|b)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 300k, 2M, 1g)")
    factor = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match.group(2)]
    return int(float(match.group(1)) * factor)


def _describe(rate: int | None) -> str:
    return "unlimited" if rate is None else f"{rate / 1000:g} kbit/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.netshape",
        description="Run a command in a network namespace behind a rate-capped veth link. "
        "Run it inside tools/in_netns.sh.",
    )
    parser.add_argument("--rate", type=parse_rate, default=None, help="downlink cap, e.g. 300k")
    parser.add_argument("--up-rate", type=parse_rate, default=None, help="uplink cap")
    parser.add_argument("--queue-ms", type=int, default=200, help="tbf queue length in ms")
    parser.add_argument("--host-addr", default="10.77.0.1", help="address on our side")
    parser.add_argument("--peer-addr", default="10.77.0.2", help="address inside")
    parser.add_argument("--prefix", type=int, default=24)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command to run inside")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    reason = CappedNamespace.unavailable_reason()
    if reason is not None:
        parser.error(reason)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    with CappedNamespace("cli", args.host_addr, args.peer_addr, args.prefix) as ns:
        ns.set_downlink(args.rate, args.queue_ms)
        ns.set_uplink(args.up_rate, args.queue_ms)
        print(
            f"netshape: ours {ns.host_addr} ({ns.host_if}), inside {ns.peer_addr} "
            f"({ns.peer_if}); downlink {_describe(args.rate)}, uplink {_describe(args.up_rate)}; "
            f"enter with: {shlex.join(ns.command([]))} <cmd>",
            file=sys.stderr,
            flush=True,
        )
        try:
            if not command:
                print("netshape: no command, holding the link until Ctrl-C", file=sys.stderr)
                signal.pause()
                return 0
            return subprocess.run(ns.command(command), check=False).returncode
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
