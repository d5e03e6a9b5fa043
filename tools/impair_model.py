"""The pure part of the network impairment tool: what happens to each packet on one direction.

No I/O and no clock of its own: :class:`LinkImpairment` is told each packet's size and arrival
time (``now_ms``) and answers when to deliver it (``[]`` = dropped, two times = duplicated).
`tools/impair.py` runs it on real packets (a user-space TUN wire); tests run it on numbers.

Per packet, in this order (the order a real access link applies them):

1. **Rate cap** (``rate_bps``): a FIFO bottleneck; the packet leaves when everything queued
   before it has been serialised at the rate. Drop-tail: a packet that would wait more than
   ``queue_ms`` (its own serialisation included) is dropped, unless the queue is empty.
2. **Loss** after the bottleneck (it used the capacity): Gilbert–Elliott burst loss
   (``burst``) and independent random loss (``loss``), each from its own random stream.
3. **Delay**: ``delay_ms`` plus jitter drawn *uniformly* from ``[0, jitter_ms]`` (mean
   ``jitter_ms / 2``). Jitter alone never reorders: a packet is never delivered before one sent
   earlier (it waits for it, as on a FIFO path). The delay stays within ``delay_ms`` and
   ``delay_ms + jitter_ms``, but when packets come faster than the jitter range that wait
   pushes delays towards the top of it.
4. **Reordering** (``reorder``): a held-back packet waits ``reorder_ms`` on top, so packets
   sent within that time overtake it. ``reordered`` counts held-back packets that were really
   overtaken by a later one.
5. **Duplication** (``duplicate``): the packet is delivered twice at the same time.

Each feature draws from its own seeded stream, so e.g. adding jitter to a profile does not
change which packets are lost.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

# Lateness samples kept for percentiles (a few seconds of video traffic).
_LATENESS_SAMPLES = 20_000


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]: {value}")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:  # also refuses NaN
        raise ValueError(f"{name} must be >= 0: {value}")


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state burst loss: the channel is good or bad; each packet first moves the state
    (good -> bad with ``p_enter_bad``, bad -> good with ``p_leave_bad``), then is lost with the
    state's loss probability. A bad spell lasts 1 / ``p_leave_bad`` packets on average."""

    p_enter_bad: float
    p_leave_bad: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_enter_bad", "p_leave_bad", "loss_good", "loss_bad"):
            _check_probability(name, getattr(self, name))
        if self.p_leave_bad == 0.0:
            raise ValueError("p_leave_bad must be > 0 (or the channel stays bad forever)")

    @property
    def mean_bad_packets(self) -> float:
        """Mean length of a bad spell, in packets."""
        return 1.0 / self.p_leave_bad

    @property
    def bad_fraction(self) -> float:
        """Long-run share of packets sent in the bad state."""
        return self.p_enter_bad / (self.p_enter_bad + self.p_leave_bad)

    @property
    def loss_rate(self) -> float:
        """Long-run loss probability of this model alone."""
        bad = self.bad_fraction
        return (1.0 - bad) * self.loss_good + bad * self.loss_bad


@dataclass(frozen=True)
class DirectionSpec:
    """Impairment of one direction. Defaults are a clean wire."""

    loss: float = 0.0  # random (Bernoulli) loss probability
    burst: GilbertElliott | None = None
    delay_ms: float = 0.0  # fixed one-way delay
    jitter_ms: float = 0.0  # extra delay, uniform in [0, jitter_ms]; keeps order
    reorder: float = 0.0  # probability a packet is held back (reorder_ms) and overtaken
    duplicate: float = 0.0
    rate_bps: int | None = None  # cap with a drop-tail queue of `queue_ms`
    queue_ms: float = 200.0
    reorder_ms: float = 20.0  # how long a held-back packet waits on top of its delay

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            _check_probability(name, getattr(self, name))
        for name in ("delay_ms", "jitter_ms", "queue_ms", "reorder_ms"):
            _check_non_negative(name, getattr(self, name))
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"rate_bps must be positive (or None for no cap): {self.rate_bps}")

    def describe(self) -> str:
        """A short human summary, e.g. 'loss 5%, delay 100 ms, cap 1000 kbit/s'."""
        parts: list[str] = []
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.burst is not None:
            b = self.burst
            parts.append(
                f"burst loss {b.loss_rate * 100:.2g}% (spells of {b.mean_bad_packets:.3g} pkts)"
            )
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g} ms")
        if self.jitter_ms:
            parts.append(f"jitter 0-{self.jitter_ms:g} ms")
        if self.reorder:
            parts.append(f"reorder {self.reorder * 100:g}% (+{self.reorder_ms:g} ms)")
        if self.duplicate:
            parts.append(f"duplicate {self.duplicate * 100:g}%")
        if self.rate_bps is not None:
            parts.append(f"cap {self.rate_bps / 1000:g} kbit/s (queue {self.queue_ms:g} ms)")
        return ", ".join(parts) or "clean"


@dataclass(frozen=True)
class Profile:
    """Named conditions for both directions, as seen from the client inside the namespace."""

    name: str
    uplink: DirectionSpec  # client (inside the namespace) -> our side (server)
    downlink: DirectionSpec  # our side -> client
    description: str = ""


COUNTER_NAMES = (
    "packets",
    "delivered",
    "lost_random",
    "lost_burst",
    "lost_queue",
    "duplicated",
    "reordered",
)


class LinkImpairment:
    """One direction's impairment: a pure, seeded, deterministic packet fate calculator.

    ``submit`` must be called with non-decreasing ``now_ms``. Invariant of the counters:
    ``packets == delivered + lost_random + lost_burst + lost_queue``.
    """

    def __init__(self, spec: DirectionSpec, seed: int) -> None:
        self._spec = spec
        # One stream per feature: changing one knob leaves the others' draws alone.
        self._loss_rng = random.Random(f"{seed}/loss")
        self._burst_rng = random.Random(f"{seed}/burst")
        self._delay_rng = random.Random(f"{seed}/delay")
        self._reorder_rng = random.Random(f"{seed}/reorder")
        self._duplicate_rng = random.Random(f"{seed}/duplicate")
        self._bad = False
        self._busy_until_ms = -math.inf  # when the bottleneck has sent everything queued
        self._last_in_order_ms = -math.inf  # FIFO floor for packets that are not held back
        self._held_ms: list[float] = []  # held-back packets not (yet) overtaken
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)

    @property
    def spec(self) -> DirectionSpec:
        return self._spec

    def reconfigure(self, spec: DirectionSpec) -> None:
        """New conditions from the next packet on; queue, burst state and streams carry over."""
        self._spec = spec

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def queue_delay_ms(self, now_ms: float) -> float:
        """How long a packet arriving now would wait in the rate cap's queue."""
        return max(self._busy_until_ms - now_ms, 0.0)

    def submit(self, size_bytes: int, now_ms: float) -> list[float]:
        """Delivery times of a packet of ``size_bytes`` arriving at ``now_ms`` ([] = dropped)."""
        spec = self._spec
        counts = self._counts
        counts["packets"] += 1
        # Held-back packets due by now can no longer be overtaken by anything from now on.
        if self._held_ms:
            self._held_ms = [t for t in self._held_ms if t > now_ms]

        at = now_ms
        if spec.rate_bps is not None:
            backlog = self.queue_delay_ms(now_ms)
            serialise = size_bytes * 8000.0 / spec.rate_bps
            if backlog > 0.0 and backlog + serialise > spec.queue_ms:
                counts["lost_queue"] += 1
                return []
            self._busy_until_ms = max(self._busy_until_ms, now_ms) + serialise
            at = self._busy_until_ms

        lost_burst = False
        if spec.burst is not None:
            ge = spec.burst
            flip = ge.p_leave_bad if self._bad else ge.p_enter_bad
            if self._burst_rng.random() < flip:
                self._bad = not self._bad
            lost_burst = self._burst_rng.random() < (ge.loss_bad if self._bad else ge.loss_good)
        lost_random = spec.loss > 0.0 and self._loss_rng.random() < spec.loss
        if lost_burst:
            counts["lost_burst"] += 1
            return []
        if lost_random:
            counts["lost_random"] += 1
            return []

        at += spec.delay_ms
        if spec.jitter_ms > 0.0:
            at += self._delay_rng.uniform(0.0, spec.jitter_ms)
        at = max(at, self._last_in_order_ms)
        if spec.reorder > 0.0 and self._reorder_rng.random() < spec.reorder:
            at += spec.reorder_ms
            self._held_ms.append(at)
        else:
            self._last_in_order_ms = at
            overtaken = [t for t in self._held_ms if t > at]
            if overtaken:
                counts["reordered"] += len(overtaken)
                self._held_ms = [t for t in self._held_ms if t <= at]
        counts["delivered"] += 1

        if spec.duplicate > 0.0 and self._duplicate_rng.random() < spec.duplicate:
            counts["duplicated"] += 1
            return [at, at]
        return [at]


class DuplexImpairment:
    """Both directions of a profile, each with its own seeded model (independent fates)."""

    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile = profile
        self.uplink = LinkImpairment(profile.uplink, seed=2 * seed + 1)
        self.downlink = LinkImpairment(profile.downlink, seed=2 * seed)

    def set_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.uplink.reconfigure(profile.uplink)
        self.downlink.reconfigure(profile.downlink)

    def stats(self) -> dict[str, dict[str, int]]:
        return {"uplink": self.uplink.counters(), "downlink": self.downlink.counters()}


@dataclass
class LatenessStats:
    """How late packets left compared with their planned delivery time (scheduling error)."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENESS_SAMPLES))

    def add(self, late_ms: float) -> None:
        late_ms = max(late_ms, 0.0)
        self.count += 1
        self.total_ms += late_ms
        self.max_ms = max(self.max_ms, late_ms)
        self._recent.append(late_ms)

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p99 (of the recent samples) and max, in ms."""
        if not self.count:
            return {"count": 0.0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        ordered = sorted(self._recent)
        return {
            "count": float(self.count),
            "mean_ms": self.total_ms / self.count,
            "p50_ms": _percentile(ordered, 0.50),
            "p99_ms": _percentile(ordered, 0.99),
            "max_ms": self.max_ms,
        }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


# -- named profiles ----------------------------------------------------------------------------

_CLEAN = DirectionSpec()


def _both(name: str, spec: DirectionSpec, description: str) -> Profile:
    return Profile(name, uplink=spec, downlink=spec, description=description)


_WIFI_BAD = DirectionSpec(
    loss=0.01,
    burst=GilbertElliott(p_enter_bad=0.02, p_leave_bad=0.25, loss_bad=0.7),
    delay_ms=5.0,
    jitter_ms=40.0,
    reorder=0.02,
    reorder_ms=15.0,
    duplicate=0.002,
)

_PROFILE_LIST = [
    _both("clean", _CLEAN, "no impairment (the TUN wire alone)"),
    _both("lossy-1", DirectionSpec(loss=0.01), "1 % random loss both ways"),
    _both("lossy-5", DirectionSpec(loss=0.05), "5 % random loss both ways"),
    Profile("lossy-5-up", DirectionSpec(loss=0.05), _CLEAN, "5 % random loss client -> server"),
    Profile("lossy-5-down", _CLEAN, DirectionSpec(loss=0.05), "5 % random loss server -> client"),
    _both("lossy-20", DirectionSpec(loss=0.20), "20 % random loss both ways"),
    Profile("lossy-20-up", DirectionSpec(loss=0.20), _CLEAN, "20 % random loss client -> server"),
    Profile("lossy-20-down", _CLEAN, DirectionSpec(loss=0.20), "20 % random loss server -> client"),
    _both(
        "bursty",
        DirectionSpec(burst=GilbertElliott(p_enter_bad=0.01, p_leave_bad=0.2)),
        "burst loss only: about 5 % in runs of 5 packets",
    ),
    _both(
        "jittery",
        DirectionSpec(delay_ms=20.0, jitter_ms=60.0),
        "20 ms + 0-60 ms jitter one way, no loss, no reordering",
    ),
    _both(
        "reorder",
        DirectionSpec(delay_ms=10.0, reorder=0.05, reorder_ms=20.0),
        "5 % of packets held back 20 ms and overtaken",
    ),
    _both(
        "wifi-bad",
        _WIFI_BAD,
        "congested Wi-Fi: bursty loss (~6 %), 5 ms + 0-40 ms jitter, 2 % reordered",
    ),
    Profile(
        "3g",
        uplink=DirectionSpec(
            loss=0.005, delay_ms=100.0, jitter_ms=20.0, rate_bps=400_000, queue_ms=300.0
        ),
        downlink=DirectionSpec(
            loss=0.005, delay_ms=100.0, jitter_ms=20.0, rate_bps=1_000_000, queue_ms=300.0
        ),
        description="3G: 100 ms + 0-20 ms one way, 1 Mbit/s down / 400 kbit/s up, 0.5 % loss",
    ),
    _both(
        "satellite",
        DirectionSpec(delay_ms=300.0, jitter_ms=10.0, loss=0.005, rate_bps=2_000_000),
        "geostationary satellite: 300 ms one way, 2 Mbit/s, 0.5 % loss",
    ),
    Profile(
        "cap-300k",
        uplink=_CLEAN,
        downlink=DirectionSpec(rate_bps=300_000, queue_ms=200.0),
        description="downlink capped at 300 kbit/s (200 ms drop-tail queue)",
    ),
]

PROFILES: dict[str, Profile] = {profile.name: profile for profile in _PROFILE_LIST}


def get_profile(text: str) -> Profile:
    """The profile called ``text`` (case and surrounding blanks ignored)."""
    name = text.strip().lower()
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown impairment profile {text!r}; known: {', '.join(PROFILES)}"
        ) from None
