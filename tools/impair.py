"""Reproducible network impairment between a private namespace and ours: a user-space TUN wire.

This kernel has no netem, so delay, jitter, reordering, duplication and burst loss are made in
user space. An :class:`ImpairedNamespace` starts a holder process in a new network namespace
(the same machinery as ``tools/netshape.py``) whose *only* link to our namespace is a pair of
TUN devices, with point-to-point routes::

    our namespace: TUN "…h" host_addr  <->  pump threads  <->  TUN "…p" peer_addr: namespace
                   (servers listen here)   (this process)       (clients run here)

Both TUN file descriptors stay in this process (the inside one is created here and then moved
into the namespace with ``ip link set … netns``). A reader thread takes every IP packet from
either TUN, asks the pure per-direction model (:class:`LinkImpairment`, tools/impair_model.py)
when to deliver it, and a delivery thread writes it to the other TUN at that time (a heap of
due times; the thread sleeps until the next one). So everything — TCP signaling, ICE/STUN,
DTLS, RTP — crosses the impaired wire, from browsers and aiortc clients alike.

Use it only inside a private namespace (``tools/in_netns.sh``). From the command line::

    bash tools/in_netns.sh .venv/bin/python -m tools.impair --profile wifi-bad -- <command...>
    .venv/bin/python -m tools.impair --list

Times are ``time.monotonic()`` milliseconds as floats: the same clock as ``sfu.clock.now_ms``,
without its rounding to whole milliseconds (which would add up to 1 ms of scheduling error).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import functools
import heapq
import os
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tools.impair_model import (
    COUNTER_NAMES,
    PROFILES,
    DirectionSpec,
    DuplexImpairment,
    GilbertElliott,
    LatenessStats,
    LinkImpairment,
    Profile,
    get_profile,
)
from tools.netshape import (
    NamespaceContext,
    NetshapeError,
    ifnames,
    namespace_unavailable_reason,
    netns_id,
    nsenter_command,
    parse_rate,
    run_checked,
    start_holder,
    stop_holder,
    write_wrapper_script,
)

__all__ = [
    "COUNTER_NAMES",
    "PROFILES",
    "DirectionSpec",
    "GilbertElliott",
    "ImpairedNamespace",
    "LinkImpairment",
    "Profile",
    "get_profile",
    "main",
]

_TOOLS = ("ip", "nsenter", "unshare")
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_READ_BYTES = 65_536
_JOIN_TIMEOUT_S = 5.0
_ADDR_POOL = "10.78.{n}.{host}"
_LINK_LOCK = threading.Lock()


def _now_ms() -> float:
    return time.monotonic() * 1000.0


def _open_tun(name: str) -> int:
    """A non-blocking fd of a new (non-persistent) TUN device: it vanishes when the fd closes."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _free_addresses() -> tuple[str, str]:
    """The first (10.78.N.1, 10.78.N.2) pair of which no address is in use in our namespace."""
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    # "inet 10.78.0.1 peer 10.78.0.2/32": both the local and the peer address count as taken.
    used = set(re.findall(r"\b(?:inet|peer) (\d+\.\d+\.\d+\.\d+)", out))
    for n in range(256):
        host, peer = _ADDR_POOL.format(n=n, host=1), _ADDR_POOL.format(n=n, host=2)
        if host not in used and peer not in used:
            return host, peer
    raise NetshapeError("no free 10.78.N.0/30 subnet for another impaired wire")


@functools.cache
def _probe(netns: str) -> str | None:
    """Create a TUN device and drop it again; the reason it failed, or None."""
    del netns  # only the cache key: the answer belongs to one namespace
    name, _ = ifnames("probe")
    try:
        os.close(_open_tun(name))
    except OSError as exc:
        return f"cannot create a TUN device (/dev/net/tun): {exc}"
    return None


class _Wire:
    """The pump: a reader thread feeding the model and a delivery thread writing on time."""

    def __init__(
        self, host_fd: int, peer_fd: int, model: DuplexImpairment, cond: threading.Condition
    ) -> None:
        self._host_fd = host_fd
        self._peer_fd = peer_fd
        self.model = model  # guarded by cond, like the heap
        self.lateness = LatenessStats()
        self.write_errors = 0
        self._cond = cond
        self._heap: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads = [
            threading.Thread(target=self._read_loop, name="impair-read", daemon=True),
            threading.Thread(target=self._deliver_loop, name="impair-deliver", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        for thread in self._threads:
            if thread.is_alive():
                thread.join(_JOIN_TIMEOUT_S)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _read_loop(self) -> None:
        poller = select.epoll()
        # Server -> client packets leave our TUN: downlink, written into the namespace's TUN.
        routes = {
            self._host_fd: (self.model.downlink, self._peer_fd),
            self._peer_fd: (self.model.uplink, self._host_fd),
        }
        try:
            for fd in (*routes, self._wake_r):
                poller.register(fd, select.EPOLLIN)
            while True:
                events = poller.poll()
                for fd, _ in events:
                    if fd == self._wake_r:
                        return
                    link, out_fd = routes[fd]
                    self._drain(fd, link, out_fd)
        finally:
            poller.close()

    def _drain(self, fd: int, link: LinkImpairment, out_fd: int) -> None:
        while True:
            try:
                packet = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EIO):
                    return  # the device is going away
                raise
            now = _now_ms()
            with self._cond:
                times = link.submit(len(packet), now)
                for due in times:
                    heapq.heappush(self._heap, (due, self._seq, out_fd, packet))
                    self._seq += 1
                if times and self._heap[0][0] == min(times):
                    self._cond.notify()  # a new earliest packet: the sleeper must wake sooner

    def _deliver_loop(self) -> None:
        due_now: list[tuple[float, int, int, bytes]] = []
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        wait_ms = self._heap[0][0] - _now_ms()
                        if wait_ms <= 0.0:
                            break
                        self._cond.wait(wait_ms / 1000.0)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                now = _now_ms()
                while self._heap and self._heap[0][0] <= now:
                    due_now.append(heapq.heappop(self._heap))
            # Written outside the lock, so the reader never waits for a write.
            for due, _, out_fd, packet in due_now:
                try:
                    os.write(out_fd, packet)
                except OSError:
                    self.write_errors += 1
                self.lateness.add(_now_ms() - due)
            due_now.clear()


class ImpairedNamespace(NamespaceContext):
    """A network namespace whose only link to ours is an impaired user-space TUN wire.

    ``host_addr`` is on our side (servers listen there and offer it as ICE candidate),
    ``peer_addr`` inside. Sync context manager; ``async with`` works too (setup runs in a
    thread). ``set_profile`` and ``stats`` are cheap and thread-safe.
    """

    def __init__(
        self,
        profile: Profile,
        seed: int = 1,
        label: str = "imp",
        host_addr: str | None = None,
        peer_addr: str | None = None,
    ) -> None:
        self.label = label
        self.seed = seed
        # Unset: the first free 10.78.N.1 / 10.78.N.2 pair, picked on entering, so that several
        # wires can coexist (two TUNs with the same peer address would steal each other's route).
        if (host_addr is None) != (peer_addr is None):
            raise ValueError("give both host_addr and peer_addr, or neither")
        self._auto_addrs = host_addr is None
        self.host_addr = host_addr or _ADDR_POOL.format(n=0, host=1)
        self.peer_addr = peer_addr or _ADDR_POOL.format(n=0, host=2)
        self.host_if, self.peer_if = ifnames(label)
        self._model = DuplexImpairment(profile, seed)
        self._cond = threading.Condition()  # guards the model and the pump's heap
        self._holder: subprocess.Popen[bytes] | None = None
        self._fds: list[int] = []
        self._wire: _Wire | None = None

    # -- capability check -------------------------------------------------------------------

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this cannot work here, or None when it can."""
        if not os.path.exists("/dev/net/tun"):
            return "no /dev/net/tun (TUN driver)"
        return namespace_unavailable_reason(_TOOLS) or _probe(netns_id())

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._model.profile

    def __enter__(self) -> ImpairedNamespace:
        if self._holder is not None:
            raise NetshapeError("already entered")
        try:
            self._holder = start_holder()
            with _LINK_LOCK:  # the free-address check and taking the address, as one step
                if self._auto_addrs:
                    self.host_addr, self.peer_addr = _free_addresses()
                self._link()
            self._wire = _Wire(self._fds[0], self._fds[1], self._model, self._cond)
            self._wire.start()
        except BaseException:
            self.close()
            raise
        return self

    def _link(self) -> None:
        for _ in range(3):
            try:
                host_fd = _open_tun(self.host_if)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise NetshapeError(f"cannot create TUN {self.host_if}: {exc}") from exc
                self.host_if, self.peer_if = ifnames(self.label)
                continue
            self._fds.append(host_fd)
            try:
                self._fds.append(_open_tun(self.peer_if))
            except OSError as exc:
                raise NetshapeError(f"cannot create TUN {self.peer_if}: {exc}") from exc
            break
        else:
            raise NetshapeError("no free interface name")
        # Our fd keeps working after the device moves: the namespace sees the device, the
        # packets still come to us. addrgenmode none: no IPv6 link-local addresses, so
        # browsers gather only peer_addr and no router solicitations cross the wire.
        run_checked(
            ["ip", "-batch", "-"],
            f"link set {self.peer_if} netns {self.pid}\n"
            f"link set {self.host_if} addrgenmode none\n"
            f"addr add {self.host_addr} peer {self.peer_addr} dev {self.host_if}\n"
            f"link set {self.host_if} up\n",
        )
        run_checked(
            self.command(["ip", "-batch", "-"]),
            "link set lo up\n"
            f"link set {self.peer_if} addrgenmode none\n"
            f"addr add {self.peer_addr} peer {self.host_addr} dev {self.peer_if}\n"
            f"link set {self.peer_if} up\n",
        )

    def close(self) -> None:
        """Stop the pump, drop both TUN devices and the holder; safe to call more than once."""
        try:
            wire, self._wire = self._wire, None
            if wire is not None:
                wire.stop()
        finally:
            fds, self._fds = self._fds, []
            for fd in fds:
                os.close(fd)  # non-persistent TUN devices vanish with their last fd
            holder, self._holder = self._holder, None
            if holder is not None:
                stop_holder(holder)

    # -- conditions and counters --------------------------------------------------------------

    def set_profile(self, profile: Profile) -> None:
        """New conditions for packets arriving from now on (queued ones keep their times)."""
        with self._cond:
            self._model.set_profile(profile)

    def stats(self) -> dict[str, dict[str, int]]:
        """{"uplink": counters, "downlink": counters}, see LinkImpairment.counters()."""
        with self._cond:
            return self._model.stats()

    def timing(self) -> dict[str, float]:
        """Scheduling error of the delivery thread: how late packets left, in ms."""
        if self._wire is None:
            return LatenessStats().summary()
        summary = self._wire.lateness.summary()
        summary["write_errors"] = float(self._wire.write_errors)
        return summary

    # -- running things inside --------------------------------------------------------------

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside the impaired namespace."""
        return nsenter_command(self.pid, argv)

    def wrapper_script(self, executable: str, directory: Path) -> Path:
        """An executable script that execs ``executable "$@"`` inside the namespace (for
        Playwright's ``executable_path``; see tools.netshape.write_wrapper_script)."""
        what = f"impaired namespace {self.label!r}"
        return write_wrapper_script(self.pid, executable, directory, self.host_if[:-1], what)


# -- CLI -------------------------------------------------------------------------------------


def parse_fraction(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05."""
    cleaned = text.strip()
    try:
        value = float(cleaned[:-1]) / 100.0 if cleaned.endswith("%") else float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability: {text!r} (e.g. 5% or 0.05)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not between 0 and 100 %: {text!r}")
    return value


def parse_ms(text: str) -> float:
    """'80ms' -> 80.0, '0.2s' -> 200.0, '80' -> 80.0 (milliseconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 80ms, 0.2s)")
    value = float(match.group(1))
    return value * 1000.0 if match.group(2) == "s" else value


def parse_burst(text: str) -> GilbertElliott | None:
    """'P_ENTER,P_LEAVE[,LOSS_GOOD,LOSS_BAD]' (each 0.02 or 2%), or 'none'."""
    if text.strip().lower() in ("none", "off"):
        return None
    parts = [parse_fraction(part) for part in text.split(",")]
    if len(parts) not in (2, 4):
        raise argparse.ArgumentTypeError(
            f"burst wants P_ENTER,P_LEAVE[,LOSS_GOOD,LOSS_BAD]: {text!r}"
        )
    try:
        return GilbertElliott(*parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# (flag, DirectionSpec field, parser, help)
_KNOBS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("loss", "loss", parse_fraction, "random loss, e.g. 5%"),
    ("burst", "burst", parse_burst, "Gilbert-Elliott P_ENTER,P_LEAVE[,LOSS_GOOD,LOSS_BAD]"),
    ("delay", "delay_ms", parse_ms, "one-way delay, e.g. 80ms"),
    ("jitter", "jitter_ms", parse_ms, "extra delay uniform in [0, JITTER], e.g. 20ms"),
    ("reorder", "reorder", parse_fraction, "share of packets held back and overtaken"),
    ("reorder-hold", "reorder_ms", parse_ms, "how long a held-back packet waits"),
    ("duplicate", "duplicate", parse_fraction, "share of packets delivered twice"),
    ("rate", "rate_bps", parse_rate, "bandwidth cap, e.g. 1M, 300k, none"),
    ("queue", "queue_ms", parse_ms, "drop-tail queue of the cap, e.g. 200ms"),
]


def _apply_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    changed: dict[str, dict[str, Any]] = {"uplink": {}, "downlink": {}}
    for flag, field_name, _, _ in _KNOBS:
        dest = flag.replace("-", "_")
        both = getattr(args, dest)
        for direction, prefix in (("uplink", "up"), ("downlink", "down")):
            one = getattr(args, f"{prefix}_{dest}")
            value = one if one is not None else both
            if value is not None:
                changed[direction][field_name] = value
    if not changed["uplink"] and not changed["downlink"]:
        return profile
    return Profile(
        name=f"{profile.name}+custom",
        uplink=dataclasses.replace(profile.uplink, **changed["uplink"]),
        downlink=dataclasses.replace(profile.downlink, **changed["downlink"]),
        description=profile.description,
    )


def _print_profiles() -> None:
    width = max(len(name) for name in PROFILES)
    for profile in PROFILES.values():
        print(f"{profile.name:<{width}}  {profile.description}")
        print(f"{'':<{width}}    up:   {profile.uplink.describe()}")
        print(f"{'':<{width}}    down: {profile.downlink.describe()}")


def _print_report(ns: ImpairedNamespace) -> None:
    for direction, counts in ns.stats().items():
        text = " ".join(f"{name}={counts[name]}" for name in COUNTER_NAMES)
        print(f"impair: {direction:<8} {text}", file=sys.stderr)
    timing = ns.timing()
    print(
        "impair: delivery lateness (scheduling error) "
        f"n={timing['count']:.0f} mean={timing['mean_ms']:.3f} ms "
        f"p50={timing['p50_ms']:.3f} ms p99={timing['p99_ms']:.3f} ms "
        f"max={timing['max_ms']:.3f} ms",
        file=sys.stderr,
    )


# Echo every datagram back (runs inside the namespace for --bench).
_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(float(sys.argv[2]))
try:
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)
except socket.timeout:
    pass
"""


def udp_echo_probe(
    ns: ImpairedNamespace, packets: int, interval_ms: float, size: int = 200
) -> dict[str, float]:
    """Send numbered datagrams from our side to an echo server inside and back.

    Returns sent, received, loss and RTT percentiles in ms (duplicates counted once).
    """
    echo = subprocess.Popen(
        ns.command([sys.executable, "-c", _ECHO, ns.peer_addr, "3"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    rtts: dict[int, float] = {}
    sent_at: dict[int, float] = {}
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((ns.host_addr, 0))
            sock.connect((ns.peer_addr, port))
            sock.setblocking(False)
            padding = bytes(max(size - 8, 0))
            start = _now_ms()
            for seq in range(packets):
                send_at = start + seq * interval_ms
                while (now := _now_ms()) < send_at:
                    _collect(sock, rtts, sent_at, (send_at - now) / 1000.0)
                sent_at[seq] = _now_ms()
                sock.send(struct.pack("!Q", seq) + padding)
            # Wait for stragglers: delay + jitter + queue, capped.
            _collect_until(sock, rtts, sent_at, _now_ms() + 2000.0)
    finally:
        echo.kill()
        echo.wait()
    values = sorted(rtts.values())
    result = {
        "sent": float(packets),
        "received": float(len(values)),
        "loss": 1.0 - len(values) / packets if packets else 0.0,
    }
    for name, q in (("p5", 0.05), ("p50", 0.5), ("p95", 0.95)):
        result[f"rtt_{name}_ms"] = (
            values[min(int(q * len(values)), len(values) - 1)] if values else 0
        )
    return result


def _collect(
    sock: socket.socket, rtts: dict[int, float], sent_at: dict[int, float], wait_s: float
) -> None:
    ready, _, _ = select.select([sock], [], [], max(wait_s, 0.0))
    if not ready:
        return
    while True:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, ConnectionRefusedError):
            return
        (seq,) = struct.unpack_from("!Q", data)
        if seq in sent_at and seq not in rtts:
            rtts[seq] = _now_ms() - sent_at[seq]


def _collect_until(
    sock: socket.socket, rtts: dict[int, float], sent_at: dict[int, float], until_ms: float
) -> None:
    # Stop early once the last 300 ms brought nothing new.
    quiet_since = _now_ms()
    seen = len(rtts)
    while (now := _now_ms()) < until_ms:
        _collect(sock, rtts, sent_at, min(0.05, (until_ms - now) / 1000.0))
        if len(rtts) != seen:
            seen, quiet_since = len(rtts), _now_ms()
        elif len(rtts) == len(sent_at) or now - quiet_since > 300.0:
            return


def _bench(ns: ImpairedNamespace) -> None:
    result = udp_echo_probe(ns, packets=500, interval_ms=5.0)
    print(
        f"impair bench ({ns.profile.name}): {result['received']:.0f}/{result['sent']:.0f} "
        f"echoed (loss {result['loss'] * 100:.1f} %), RTT p5 {result['rtt_p5_ms']:.2f} ms, "
        f"p50 {result['rtt_p50_ms']:.2f} ms, p95 {result['rtt_p95_ms']:.2f} ms",
        file=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.impair",
        description="Run a command in a network namespace behind an impaired user-space TUN "
        "wire (loss, burst loss, delay, jitter, reordering, duplication, rate cap; per "
        "direction: up = from the namespace to our side). Run it inside tools/in_netns.sh.",
    )
    parser.add_argument("--list", action="store_true", help="print the profiles and exit")
    parser.add_argument("--profile", default="clean", help="named profile (see --list)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (reproducible fates)")
    parser.add_argument(
        "--host-addr", default=None, help="address on our side (default: 10.78.N.1, first free)"
    )
    parser.add_argument("--peer-addr", default=None, help="address inside (default: 10.78.N.2)")
    parser.add_argument(
        "--bench",
        action="store_true",
        help="before the command: a 2.5 s UDP echo probe through the wire (loss, RTT)",
    )
    for flag, _, kind, text in _KNOBS:
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"{text} (both ways)")
        parser.add_argument(f"--up-{flag}", type=kind, default=None, help=argparse.SUPPRESS)
        parser.add_argument(f"--down-{flag}", type=kind, default=None, help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command to run inside")
    parser.epilog = (
        "Every knob also exists per direction: --up-loss, --down-delay, --down-rate, ..."
    )
    return parser


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The --profile with the command line's overrides applied (ValueError if invalid)."""
    return _apply_overrides(get_profile(args.profile), args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _print_profiles()
        return 0
    try:
        profile = profile_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    reason = ImpairedNamespace.unavailable_reason()
    if reason is not None:
        parser.error(reason)
    if (args.host_addr is None) != (args.peer_addr is None):
        parser.error("give both --host-addr and --peer-addr, or neither")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    with ImpairedNamespace(profile, args.seed, "cli", args.host_addr, args.peer_addr) as ns:
        print(
            f"impair: ours {ns.host_addr} ({ns.host_if}), inside {ns.peer_addr} "
            f"({ns.peer_if}); profile {profile.name}\n"
            f"impair:   up:   {profile.uplink.describe()}\n"
            f"impair:   down: {profile.downlink.describe()}\n"
            f"impair: enter with: {shlex.join(ns.command([]))} <cmd>",
            file=sys.stderr,
            flush=True,
        )
        try:
            if args.bench:
                _bench(ns)
            if not command:
                if args.bench:
                    return 0
                print("impair: no command, holding the wire until Ctrl-C", file=sys.stderr)
                signal.pause()
                return 0
            return subprocess.run(ns.command(command), check=False).returncode
        except KeyboardInterrupt:
            return 130
        finally:
            _print_report(ns)


if __name__ == "__main__":
    sys.exit(main())
