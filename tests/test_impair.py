"""tools/impair.py: the pure per-direction impairment model, profiles, CLI parsing, and the
user-space TUN wire through a real namespace (the latter needs tools/in_netns.sh)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.impair import (
    PROFILES,
    DirectionSpec,
    GilbertElliott,
    ImpairedNamespace,
    LinkImpairment,
    Profile,
    build_parser,
    get_profile,
    parse_burst,
    parse_fraction,
    parse_ms,
    profile_from_args,
    udp_echo_probe,
)
from tools.impair_model import COUNTER_NAMES, DuplexImpairment, LatenessStats

# -- helpers -------------------------------------------------------------------------------------


def run(
    spec: DirectionSpec, n: int, interval_ms: float, seed: int = 7, size: int = 1000
) -> list[tuple[float, list[float]]]:
    """(send time, delivery times) for n packets sent every interval_ms."""
    link = LinkImpairment(spec, seed)
    out = []
    for i in range(n):
        now = i * interval_ms
        out.append((now, link.submit(size, now)))
    return out


def loss_runs(outcomes: list[tuple[float, list[float]]]) -> list[int]:
    """Lengths of the runs of consecutive dropped packets."""
    runs: list[int] = []
    current = 0
    for _, times in outcomes:
        if times:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


def check_invariant(counts: dict[str, int]) -> None:
    assert set(counts) == set(COUNTER_NAMES)
    lost = counts["lost_random"] + counts["lost_burst"] + counts["lost_queue"]
    assert counts["packets"] == counts["delivered"] + lost


# -- loss ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2, 0.5])
def test_random_loss_rate_within_tolerance(p: float) -> None:
    n = 20_000
    link = LinkImpairment(DirectionSpec(loss=p), seed=3)
    delivered = sum(bool(link.submit(1200, i * 2.0)) for i in range(n))
    lost = n - delivered
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(lost - n * p) < 4 * sigma, (lost, n * p)
    counts = link.counters()
    assert counts["lost_random"] == lost and counts["lost_burst"] == counts["lost_queue"] == 0
    check_invariant(counts)


def test_no_loss_means_no_loss() -> None:
    outcomes = run(DirectionSpec(), 2000, 1.0)
    assert all(times == [now] for now, times in outcomes)


@pytest.mark.parametrize("p_enter,p_leave", [(0.02, 0.25), (0.01, 0.1), (0.05, 0.5)])
def test_gilbert_elliott_mean_burst_is_one_over_p_leave(p_enter: float, p_leave: float) -> None:
    ge = GilbertElliott(p_enter_bad=p_enter, p_leave_bad=p_leave)
    outcomes = run(DirectionSpec(burst=ge), 60_000, 1.0, seed=11)
    runs = loss_runs(outcomes)
    assert len(runs) > 200
    mean_run = sum(runs) / len(runs)
    assert mean_run == pytest.approx(1 / p_leave, rel=0.12)
    lost = sum(runs)
    assert lost / len(outcomes) == pytest.approx(ge.loss_rate, rel=0.15)
    # Bursty, not random: random loss at the same rate has mean runs close to 1.
    assert mean_run > 1.5
    link = LinkImpairment(DirectionSpec(burst=ge), seed=11)
    for i in range(60_000):
        link.submit(1000, float(i))
    assert link.counters()["lost_burst"] == lost


def test_gilbert_elliott_partial_loss_states() -> None:
    ge = GilbertElliott(p_enter_bad=0.1, p_leave_bad=0.1, loss_good=0.01, loss_bad=0.5)
    assert ge.bad_fraction == pytest.approx(0.5)
    assert ge.loss_rate == pytest.approx(0.255)
    outcomes = run(DirectionSpec(burst=ge), 40_000, 1.0, seed=5)
    lost = sum(not times for _, times in outcomes)
    assert lost / len(outcomes) == pytest.approx(ge.loss_rate, rel=0.08)


# -- delay, jitter, order ------------------------------------------------------------------------


def test_fixed_delay_is_exact() -> None:
    for now, times in run(DirectionSpec(delay_ms=42.5), 500, 3.0):
        assert times == [now + 42.5]


def test_delay_and_jitter_bounds_and_uniform_mean() -> None:
    # Sparse packets (100 ms apart): jitter is the uniform draw alone.
    sparse = run(DirectionSpec(delay_ms=30.0, jitter_ms=20.0), 4000, 100.0)
    delays = [times[0] - now for now, times in sparse]
    assert min(delays) >= 30.0 and max(delays) <= 50.0
    assert sum(delays) / len(delays) == pytest.approx(40.0, abs=0.5)
    assert min(delays) < 31.0 and max(delays) > 49.0  # it spans the range
    # Dense packets (1 ms apart): still within bounds, order kept.
    dense = run(DirectionSpec(delay_ms=30.0, jitter_ms=20.0), 4000, 1.0)
    delays = [times[0] - now for now, times in dense]
    assert min(delays) >= 30.0 and max(delays) <= 50.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_without_reorder_never_reorders(seed: int) -> None:
    spec = DirectionSpec(delay_ms=10.0, jitter_ms=100.0, loss=0.1, duplicate=0.05)
    link = LinkImpairment(spec, seed)
    deliveries: list[float] = []
    for i in range(5000):
        deliveries.extend(link.submit(1200, i * 0.5))
    assert deliveries == sorted(deliveries)
    assert link.counters()["reordered"] == 0


def overtaken_count(outcomes: list[tuple[float, list[float]]]) -> int:
    """Packets delivered after at least one packet sent later (computed independently)."""
    firsts = [times[0] for _, times in outcomes if times]
    count = 0
    later_min = math.inf
    for t in reversed(firsts):
        if later_min < t:
            count += 1
        later_min = min(later_min, t)
    return count


def test_reordering_counts() -> None:
    spec = DirectionSpec(delay_ms=10.0, reorder=0.1, reorder_ms=20.0)
    link = LinkImpairment(spec, seed=9)
    outcomes = [(i * 2.0, link.submit(1000, i * 2.0)) for i in range(10_000)]
    reordered = link.counters()["reordered"]
    # Packets 2 ms apart and a 20 ms hold: nearly every held packet is overtaken.
    assert reordered == overtaken_count(outcomes)
    assert reordered == pytest.approx(1000, rel=0.12)
    held_delays = [times[0] - now for now, times in outcomes if times[0] - now > 10.0]
    assert all(d == pytest.approx(30.0) for d in held_delays)


def test_held_packet_not_overtaken_is_not_counted() -> None:
    # 100 ms between packets and a 20 ms hold: nothing can overtake.
    link = LinkImpairment(DirectionSpec(reorder=0.5, reorder_ms=20.0), seed=4)
    outcomes = [(i * 100.0, link.submit(1000, i * 100.0)) for i in range(1000)]
    assert overtaken_count(outcomes) == 0
    assert link.counters()["reordered"] == 0


def test_duplication_counts() -> None:
    link = LinkImpairment(DirectionSpec(duplicate=0.1, delay_ms=5.0), seed=2)
    results = [link.submit(500, float(i)) for i in range(10_000)]
    doubles = [times for times in results if len(times) == 2]
    assert all(times[0] == times[1] for times in doubles)
    assert link.counters()["duplicated"] == len(doubles)
    assert len(doubles) == pytest.approx(1000, rel=0.12)
    check_invariant(link.counters())


# -- rate cap ------------------------------------------------------------------------------------


def test_rate_cap_spacing_matches_size_over_rate() -> None:
    rate = 1_000_000
    link = LinkImpairment(DirectionSpec(rate_bps=rate, queue_ms=1000.0, delay_ms=7.0), seed=1)
    # 1250-byte packets take 10 ms each; 50 of them arrive at once.
    deliveries = [link.submit(1250, 0.0) for _ in range(50)]
    assert all(len(times) == 1 for times in deliveries)
    flat = [times[0] for times in deliveries]
    assert flat[0] == pytest.approx(10.0 + 7.0)
    gaps = [b - a for a, b in zip(flat, flat[1:], strict=False)]
    assert all(gap == pytest.approx(1250 * 8 * 1000 / rate) for gap in gaps)


def test_rate_cap_below_capacity_adds_only_serialisation() -> None:
    link = LinkImpairment(DirectionSpec(rate_bps=2_000_000), seed=1)
    for i in range(200):
        now = i * 10.0  # 1000 B every 10 ms = 800 kbit/s < 2 Mbit/s
        assert link.submit(1000, now) == [pytest.approx(now + 4.0)]
    assert link.counters()["lost_queue"] == 0


def test_rate_cap_queue_overflow_drops_tail() -> None:
    link = LinkImpairment(DirectionSpec(rate_bps=1_000_000, queue_ms=200.0), seed=1)
    results = [link.submit(1250, 0.0) for _ in range(100)]
    accepted = [times for times in results if times]
    # 10 ms per packet, at most 200 ms of waiting including its own serialisation.
    assert len(accepted) == 20
    assert all(results[i] for i in range(20)) and not any(results[20:])
    assert link.counters()["lost_queue"] == 80
    # The queue drains: 200 ms later there is room again.
    assert link.submit(1250, 200.0) == [pytest.approx(210.0)]
    check_invariant(link.counters())


def test_rate_cap_sustained_overload_delivers_at_the_rate() -> None:
    rate = 500_000
    link = LinkImpairment(DirectionSpec(rate_bps=rate, queue_ms=100.0), seed=1)
    delivered_bytes = 0
    last = 0.0
    for i in range(5000):  # 1200 B every 1 ms = 9.6 Mbit/s offered for 5 s
        for t in link.submit(1200, float(i)):
            delivered_bytes += 1200
            last = t
    assert delivered_bytes * 8000 / last == pytest.approx(rate, rel=0.02)
    assert link.queue_delay_ms(5000.0) <= 100.0


# -- determinism, independence, reconfiguration --------------------------------------------------


WIFI = PROFILES["wifi-bad"].downlink


def test_same_seed_same_outcome() -> None:
    a = run(WIFI, 3000, 1.0, seed=42)
    b = run(WIFI, 3000, 1.0, seed=42)
    c = run(WIFI, 3000, 1.0, seed=43)
    assert a == b
    assert a != c


def test_loss_pattern_does_not_depend_on_other_knobs() -> None:
    lossy = run(DirectionSpec(loss=0.1), 3000, 1.0, seed=5)
    lossy_delayed = run(DirectionSpec(loss=0.1, delay_ms=50, jitter_ms=30), 3000, 1.0, seed=5)
    assert [bool(t) for _, t in lossy] == [bool(t) for _, t in lossy_delayed]


def test_directions_are_independent() -> None:
    spec = DirectionSpec(loss=0.2, jitter_ms=10.0)
    profile = Profile("t", uplink=spec, downlink=spec)

    def downlink_fates(with_uplink_traffic: bool) -> list[list[float]]:
        duplex = DuplexImpairment(profile, seed=8)
        fates = []
        for i in range(2000):
            if with_uplink_traffic:
                duplex.uplink.submit(300, float(i))
            fates.append(duplex.downlink.submit(1200, float(i)))
        return fates

    assert downlink_fates(True) == downlink_fates(False)
    duplex = DuplexImpairment(profile, seed=8)
    up = [bool(duplex.uplink.submit(1000, float(i))) for i in range(2000)]
    down = [bool(duplex.downlink.submit(1000, float(i))) for i in range(2000)]
    assert up != down  # same spec and seed, different streams per direction
    stats = duplex.stats()
    assert stats["uplink"]["packets"] == stats["downlink"]["packets"] == 2000


def test_one_way_profile_touches_one_direction() -> None:
    duplex = DuplexImpairment(get_profile("lossy-20-up"), seed=1)
    for i in range(2000):
        duplex.uplink.submit(1000, float(i))
        duplex.downlink.submit(1000, float(i))
    stats = duplex.stats()
    assert stats["downlink"]["delivered"] == 2000
    assert stats["uplink"]["lost_random"] == pytest.approx(400, rel=0.15)


def test_set_profile_changes_conditions_from_the_next_packet() -> None:
    duplex = DuplexImpairment(get_profile("lossy-20"), seed=1)
    for i in range(1000):
        duplex.downlink.submit(1000, float(i))
    lost_before = duplex.stats()["downlink"]["lost_random"]
    assert lost_before > 100
    duplex.set_profile(get_profile("clean"))
    assert all(duplex.downlink.submit(1000, 1000.0 + i) for i in range(1000))
    assert duplex.stats()["downlink"]["lost_random"] == lost_before
    assert duplex.profile.name == "clean"


# -- specs and profiles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"reorder": 2.0},
        {"duplicate": -1.0},
        {"delay_ms": -1.0},
        {"jitter_ms": float("nan")},
        {"rate_bps": 0},
        {"queue_ms": -5.0},
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DirectionSpec(**kwargs)  # type: ignore[arg-type]


def test_bad_gilbert_elliott_is_refused() -> None:
    with pytest.raises(ValueError):
        GilbertElliott(p_enter_bad=0.1, p_leave_bad=0.0)
    with pytest.raises(ValueError):
        GilbertElliott(p_enter_bad=1.1, p_leave_bad=0.5)


REQUIRED_PROFILES = ["clean", "lossy-5", "lossy-20", "wifi-bad", "3g", "lossy-5-up", "lossy-5-down"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_is_valid_and_runs(name: str) -> None:
    profile = PROFILES[name]
    assert profile.name == name and profile.description
    duplex = DuplexImpairment(profile, seed=1)
    for i in range(3000):
        duplex.uplink.submit(1200, i * 2.0)
        duplex.downlink.submit(1200, i * 2.0)
    for counts in duplex.stats().values():
        check_invariant(counts)
        assert counts["packets"] == 3000
    assert profile.uplink.describe() and profile.downlink.describe()


def test_required_profiles_have_the_promised_conditions() -> None:
    assert set(REQUIRED_PROFILES) <= set(PROFILES)
    assert PROFILES["clean"].uplink == PROFILES["clean"].downlink == DirectionSpec()
    assert PROFILES["lossy-5"].uplink.loss == PROFILES["lossy-5"].downlink.loss == 0.05
    assert PROFILES["lossy-20"].downlink.loss == 0.2
    assert PROFILES["lossy-5-up"].downlink == DirectionSpec()
    assert PROFILES["lossy-5-down"].uplink == DirectionSpec()
    wifi = PROFILES["wifi-bad"].downlink
    assert wifi.burst is not None and wifi.jitter_ms > 0 and wifi.reorder > 0
    g3 = PROFILES["3g"]
    assert g3.downlink.rate_bps == 1_000_000 and g3.uplink.rate_bps == 400_000
    assert 80 <= g3.downlink.delay_ms <= 150 and g3.downlink.jitter_ms > 0
    assert 0 < g3.downlink.loss < 0.02


def test_get_profile() -> None:
    assert get_profile("3g") is PROFILES["3g"]
    assert get_profile(" WiFi-Bad ") is PROFILES["wifi-bad"]
    with pytest.raises(ValueError, match="known: clean, .*lossy-5"):
        get_profile("dialup")


# -- CLI parsing ---------------------------------------------------------------------------------


def test_parsers() -> None:
    assert parse_fraction("5%") == pytest.approx(0.05)
    assert parse_fraction("0.2") == pytest.approx(0.2)
    assert parse_ms("80ms") == 80.0 and parse_ms("0.2s") == 200.0 and parse_ms("15") == 15.0
    assert parse_burst("2%,25%") == GilbertElliott(0.02, 0.25)
    assert parse_burst("0.1,0.5,0.01,0.8") == GilbertElliott(0.1, 0.5, 0.01, 0.8)
    assert parse_burst("none") is None
    for bad in ("150%", "x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fraction(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_ms("fast")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_burst("0.1")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_burst("0.1,0")


def test_command_line_overrides_per_direction() -> None:
    args = build_parser().parse_args(
        ["--profile", "3g", "--loss", "5%", "--down-delay", "80ms", "--up-rate", "200k"]
        + ["--jitter", "10ms", "--", "sleep", "1"]
    )
    profile = profile_from_args(args)
    assert profile.name == "3g+custom"
    assert profile.uplink.loss == profile.downlink.loss == pytest.approx(0.05)
    assert profile.downlink.delay_ms == 80.0 and profile.uplink.delay_ms == 100.0
    assert profile.uplink.rate_bps == 200_000 and profile.downlink.rate_bps == 1_000_000
    assert profile.uplink.jitter_ms == profile.downlink.jitter_ms == 10.0
    assert args.command == ["--", "sleep", "1"]
    plain = build_parser().parse_args(["--profile", "lossy-5"])
    assert profile_from_args(plain) is PROFILES["lossy-5"]


def test_list_prints_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.impair import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in PROFILES:
        assert name in out


def test_lateness_stats() -> None:
    stats = LatenessStats()
    assert stats.summary()["count"] == 0
    for late in [0.1] * 98 + [2.0, -0.5]:
        stats.add(late)
    summary = stats.summary()
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(0.1)
    assert summary["max_ms"] == pytest.approx(2.0)
    assert summary["mean_ms"] == pytest.approx((98 * 0.1 + 2.0) / 100)


# -- the real wire (tools/in_netns.sh) -------------------------------------------------------------

ONE_WAY_LOSSY = Profile(
    "test-down-20-30ms",
    uplink=DirectionSpec(),
    downlink=DirectionSpec(loss=0.2, delay_ms=30.0),
    description="20 % loss and 30 ms delay towards the namespace only",
)

# Download `size` bytes from our side and print their sha256 (runs inside the namespace).
TCP_CLIENT = r"""
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
digest, total = hashlib.sha256(), 0
while chunk := s.recv(65536):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""


def _require_impair() -> None:
    reason = ImpairedNamespace.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to build the impaired TUN wire: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def wire() -> Iterator[ImpairedNamespace]:
    _require_impair()
    with ImpairedNamespace(ONE_WAY_LOSSY, seed=3, label="imptst") as ns:
        yield ns


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


@pytest.mark.webrtc
def test_udp_echo_sees_configured_loss_and_delay(wire: ImpairedNamespace) -> None:
    wire.set_profile(ONE_WAY_LOSSY)
    before = wire.stats()
    result = udp_echo_probe(wire, packets=400, interval_ms=3.0)
    after = wire.stats()
    down = {k: after["downlink"][k] - before["downlink"][k] for k in COUNTER_NAMES}
    up = {k: after["uplink"][k] - before["uplink"][k] for k in COUNTER_NAMES}
    print(f"udp echo through {ONE_WAY_LOSSY.name}: {result}; timing {wire.timing()}")
    # Count-based: every datagram crossed the model once each way; the echo saw what it let by.
    assert down["packets"] == 400
    assert up["lost_random"] == 0 and up["delivered"] == down["delivered"]
    assert result["received"] == down["delivered"]
    assert 0.12 <= result["loss"] <= 0.28
    # Each echo crossed the 30 ms direction once; generous upper bound for a loaded runner.
    assert result["rtt_p5_ms"] >= 30.0
    assert result["rtt_p50_ms"] < 30.0 + 500.0


@pytest.mark.webrtc
def test_tcp_transfer_completes_across_lossy_5(wire: ImpairedNamespace) -> None:
    wire.set_profile(get_profile("lossy-5"))
    before = wire.stats()
    payload = os.urandom(1_000_000)
    with socket.create_server((wire.host_addr, 0)) as server:
        server.settimeout(20)
        port = server.getsockname()[1]

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(payload)

        sender = threading.Thread(target=serve, daemon=True)
        sender.start()
        out = subprocess.run(
            wire.command([sys.executable, "-c", TCP_CLIENT, wire.host_addr, str(port)]),
            capture_output=True,
            text=True,
            timeout=25,
            check=True,
        ).stdout.split()
        sender.join(5)
    after = wire.stats()
    assert out == [str(len(payload)), hashlib.sha256(payload).hexdigest()]
    lost_down = after["downlink"]["lost_random"] - before["downlink"]["lost_random"]
    sent_down = after["downlink"]["packets"] - before["downlink"]["packets"]
    print(f"1 MB over lossy-5: {sent_down} segments down, {lost_down} lost and recovered")
    assert sent_down >= len(payload) // 1500  # ~1 MB in <= 1500-byte packets
    assert 0.02 * sent_down <= lost_down <= 0.1 * sent_down


@pytest.mark.webrtc
def test_exit_removes_the_wire_and_the_holder() -> None:
    _require_impair()
    ns = ImpairedNamespace(get_profile("clean"), label="impgone")
    with ns:
        pid, host_if = ns.pid, ns.host_if
        assert host_if in _interfaces()
        inside = subprocess.run(
            ns.command(["ip", "-o", "addr", "show"]), capture_output=True, text=True, check=True
        ).stdout
        assert ns.peer_addr in inside and ns.peer_if in inside
    ns.close()  # a second close is harmless
    assert host_if not in _interfaces()
    assert not Path(f"/proc/{pid}").exists(), "the holder was not reaped"


# Fetch a URL and print its size and sha256 (runs inside the namespace, via the wrapper script).
HTTP_CLIENT = r"""
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
    body = response.read()
print(len(body), hashlib.sha256(body).hexdigest(), flush=True)
"""


# Every kind of damage at once, but no long loss bursts: per-packet bursts can outlast TCP's
# backed-off retransmission timer (few packets in flight) and stall a transfer for many seconds.
MIXED = DirectionSpec(loss=0.03, jitter_ms=20.0, reorder=0.05, reorder_ms=10.0, duplicate=0.04)


@pytest.mark.webrtc
async def test_async_http_get_across_mixed_damage_through_a_wrapper(tmp_path: Path) -> None:
    _require_impair()
    from aiohttp import web

    body = os.urandom(300_000)

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/blob", blob)
    profile = Profile("mixed", uplink=MIXED, downlink=MIXED)
    async with ImpairedNamespace(profile, seed=2, label="impweb") as ns:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, ns.host_addr, 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            python = ns.wrapper_script(sys.executable, tmp_path)
            proc = await asyncio.create_subprocess_exec(
                str(python),
                "-c",
                HTTP_CLIENT,
                f"http://{ns.host_addr}:{port}/blob",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        finally:
            await runner.cleanup()
        stats = ns.stats()
    assert proc.returncode == 0
    assert out.decode().split() == [str(len(body)), hashlib.sha256(body).hexdigest()]
    down = stats["downlink"]
    print(f"300 kB with loss, jitter, reordering and duplicates: downlink {down}")
    assert down["reordered"] > 0 and down["lost_random"] + down["duplicated"] > 0


@pytest.mark.webrtc
def test_two_wires_coexist_on_their_own_addresses(wire: ImpairedNamespace) -> None:
    wire.set_profile(get_profile("clean"))
    with ImpairedNamespace(get_profile("clean"), label="imptwo") as second:
        assert {second.host_addr, second.peer_addr}.isdisjoint({wire.host_addr, wire.peer_addr})
        for ns in (wire, second):
            # A TCP listener on our side of each wire answers from inside that namespace only.
            with socket.create_server((ns.host_addr, 0)) as server:
                port = server.getsockname()[1]
                probe = f"import socket; socket.create_connection(({ns.host_addr!r}, {port}), 5)"
                subprocess.run(ns.command([sys.executable, "-c", probe]), check=True, timeout=10)
        assert second.stats()["uplink"]["packets"] > 0
