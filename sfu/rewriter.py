"""Sequence number / timestamp / VP8 PictureID rewriting for one outgoing stream.

A subscriber sees one continuous RTP stream even though what we forward to it may come
from several incoming streams over time (publisher restarts with a new SSRC, simulcast
layer switches) and may have deliberate holes (padding we drop, pauses). Pure: time is
passed in as `now_ms`.
"""

from __future__ import annotations

from bisect import bisect_right

from media.rtp import SequenceUnwrapper, TimestampUnwrapper, Unwrapper

SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF
PICTURE_ID_MASK = 0x7FFF
TL0PICIDX_MASK = 0xFF

# Runs of dropped sequence numbers remembered per source so that late (reordered or
# retransmitted) packets still map correctly; beyond this, the oldest run is forgotten and
# packets from before it count as too old.
MAX_DROPPED_RUNS = 256


def _excluded_start(run: tuple[int, int, int]) -> int:
    return run[0]


class SeqTsRewriter:
    """Maps successive incoming sources onto one continuous outgoing seq/ts space.

    Within a source, outgoing = incoming (unwrapped) + offset; the offset shrinks by one
    for every dropped packet so that drops leave no gap (H264 decoders treat a gap as loss).
    A new source (`switch_source`) continues at last seq + 1 and last timestamp + the
    wall-clock time elapsed since the last forwarded packet (at least one tick).
    """

    __slots__ = (
        "_base_offset",
        "_clock_rate",
        "_floor",
        "_highest_in",
        "_initial_seq",
        "_initial_ts",
        "_last_ms",
        "_last_out_seq",
        "_last_out_ts",
        "_pending",
        "_keep_ts",
        "_runs",
        "_seq_unwrap",
        "_started",
        "_ts_offset",
        "_ts_unwrap",
    )

    def __init__(self, clock_rate: int, initial_seq: int, initial_ts: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self._clock_rate = clock_rate
        self._initial_seq = initial_seq & SEQ_MASK
        self._initial_ts = initial_ts & TS_MASK
        self._seq_unwrap = SequenceUnwrapper()
        self._ts_unwrap = TimestampUnwrapper()
        self._started = False  # anything forwarded yet (by any source)?
        self._pending = True  # the next rewritten packet starts a new segment
        self._keep_ts = False  # ... of the same source (resume): keep the ts mapping
        # Outgoing side, unwrapped: the newest forwarded packet and when it was forwarded.
        self._last_out_seq = self._initial_seq - 1
        self._last_out_ts = self._initial_ts
        self._last_ms = 0
        # Current segment, in unwrapped incoming sequence numbers.
        self._floor = 0  # packets below this are too old
        self._highest_in = 0
        self._base_offset = 0
        self._ts_offset = 0
        # Dropped runs [start, end) with the cumulative count of drops up to `end`.
        self._runs: list[tuple[int, int, int]] = []

    # --- state the shell may need (RTCP sender reports, metrics) ------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def last_sequence_number(self) -> int:
        """Outgoing sequence number of the newest forwarded packet (or initial - 1)."""
        return self._last_out_seq & SEQ_MASK

    @property
    def last_timestamp(self) -> int:
        return self._last_out_ts & TS_MASK

    @property
    def timestamp_offset(self) -> int:
        """outgoing ts = (incoming ts + offset) mod 2**32 for the current source."""
        return self._ts_offset & TS_MASK

    # --- source changes -----------------------------------------------------------------

    def switch_source(self) -> None:
        """The next packet comes from a different incoming stream."""
        self._pending = True
        self._keep_ts = False
        self._seq_unwrap = SequenceUnwrapper()
        self._ts_unwrap = TimestampUnwrapper()

    def resume(self) -> None:
        """The same source continues after a deliberate hole (e.g. a pause).

        Sequence numbers continue at last + 1; the timestamp mapping of the source is
        kept so that the media clock (and lip-sync) stays exact.
        """
        # Not before the first packet (initial values apply) nor over a pending switch.
        if self._started and not self._pending:
            self._pending = True
            self._keep_ts = True

    # --- per packet ---------------------------------------------------------------------

    def _start_segment(self, ext_seq: int, ext_ts: int, now_ms: int) -> tuple[int, int]:
        out_seq = self._last_out_seq + 1
        if not self._started:
            out_ts = self._initial_ts
        else:
            out_ts = ext_ts + self._ts_offset
            if not self._keep_ts or out_ts <= self._last_out_ts:
                # Continue the outgoing clock by the wall-clock time that passed.
                elapsed = (now_ms - self._last_ms) * self._clock_rate // 1000
                out_ts = self._last_out_ts + max(1, elapsed)
        self._ts_offset = out_ts - ext_ts
        self._base_offset = out_seq - ext_seq
        self._floor = ext_seq
        self._highest_in = ext_seq
        self._runs.clear()
        self._pending = False
        self._keep_ts = False
        self._started = True
        self._last_out_seq = out_seq
        self._last_out_ts = out_ts
        self._last_ms = now_ms
        return out_seq & SEQ_MASK, out_ts & TS_MASK

    def _seq_offset(self, ext_seq: int) -> int | None:
        runs = self._runs
        if not runs:
            return self._base_offset
        last = runs[-1]
        if ext_seq >= last[1]:  # the common case: newer than every drop
            return self._base_offset - last[2]
        i = bisect_right(runs, ext_seq, key=_excluded_start) - 1
        if i < 0:
            return self._base_offset
        start, end, dropped = runs[i]
        if ext_seq < end:
            return None  # this very packet was dropped; its number went to a later one
        return self._base_offset - dropped

    def rewrite(self, seq_in: int, ts_in: int, now_ms: int) -> tuple[int, int] | None:
        """Outgoing (seq, ts) for a packet to forward; None if it is older than the start
        of the current source (or was dropped before)."""
        ext_seq = self._seq_unwrap.unwrap(seq_in)
        ext_ts = self._ts_unwrap.unwrap(ts_in)
        if self._pending:
            return self._start_segment(ext_seq, ext_ts, now_ms)
        if ext_seq < self._floor:
            return None
        offset = self._seq_offset(ext_seq)
        if offset is None:
            return None
        out_seq = ext_seq + offset
        out_ts = ext_ts + self._ts_offset
        if ext_seq > self._highest_in:
            self._highest_in = ext_seq
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_ms = now_ms
        return out_seq & SEQ_MASK, out_ts & TS_MASK

    def drop(self, seq_in: int) -> bool:
        """A packet of the current source that is deliberately not forwarded.

        If it is newer than everything seen, later packets move down by one so the
        outgoing sequence has no gap; returns True then. An older one cannot be taken
        back (its successors are out already) and leaves a gap; returns False.
        """
        if self._pending:
            # Nothing of this source forwarded yet: the segment will start after it anyway.
            return False
        ext_seq = self._seq_unwrap.unwrap(seq_in)
        if ext_seq <= self._highest_in:
            return False
        offset = self._seq_offset(ext_seq)
        assert offset is not None  # newer than every run
        runs = self._runs
        if runs and runs[-1][1] == ext_seq:
            start, _, dropped = runs[-1]
            runs[-1] = (start, ext_seq + 1, dropped + 1)
        else:
            runs.append((ext_seq, ext_seq + 1, (runs[-1][2] if runs else 0) + 1))
            if len(runs) > MAX_DROPPED_RUNS:
                del runs[0]
                # Packets before the oldest remembered run can no longer be mapped.
                self._floor = runs[0][0]
        self._highest_in = ext_seq
        # Numbers of packets still missing before this one stay reserved for them.
        self._last_out_seq = ext_seq - 1 + offset
        return True


class Vp8PictureIdRewriter:
    """Keeps VP8 PictureID (15-bit) and TL0PICIDX (8-bit) continuous across sources."""

    __slots__ = (
        "_pic_bits",
        "_pic_last_out",
        "_pic_offset",
        "_pic_unwrap",
        "_tl0_last_out",
        "_tl0_offset",
        "_tl0_unwrap",
    )

    def __init__(self) -> None:
        self._pic_unwrap: Unwrapper | None = None  # None: next PictureID starts a mapping
        self._pic_bits = 15
        self._pic_offset = 0
        self._pic_last_out: int | None = None
        self._tl0_unwrap: Unwrapper | None = None
        self._tl0_offset = 0
        self._tl0_last_out: int | None = None

    def switch_source(self) -> None:
        self._pic_unwrap = None
        self._tl0_unwrap = None

    def rewrite(
        self, picture_id_in: int | None, tl0_in: int | None, picture_id_bits: int = 15
    ) -> tuple[int | None, int | None]:
        """Outgoing (PictureID, TL0PICIDX); None passes through for an absent field.

        `picture_id_bits` is the incoming width (7 or 15) so 7-bit ids unwrap at 128.
        The first source keeps its values; later sources continue at last + 1.
        """
        pic_out: int | None = None
        if picture_id_in is not None:
            unwrap = self._pic_unwrap
            if unwrap is None or picture_id_bits != self._pic_bits:
                unwrap = self._pic_unwrap = Unwrapper(picture_id_bits)
                self._pic_bits = picture_id_bits
                ext = unwrap.unwrap(picture_id_in)
                last = self._pic_last_out
                self._pic_offset = 0 if last is None else last + 1 - ext
            else:
                ext = unwrap.unwrap(picture_id_in)
            out = ext + self._pic_offset
            if self._pic_last_out is None or out > self._pic_last_out:
                self._pic_last_out = out
            pic_out = out & PICTURE_ID_MASK
        tl0_out: int | None = None
        if tl0_in is not None:
            unwrap = self._tl0_unwrap
            if unwrap is None:
                unwrap = self._tl0_unwrap = Unwrapper(8)
                ext = unwrap.unwrap(tl0_in)
                last = self._tl0_last_out
                self._tl0_offset = 0 if last is None else last + 1 - ext
            else:
                ext = unwrap.unwrap(tl0_in)
            out = ext + self._tl0_offset
            if self._tl0_last_out is None or out > self._tl0_last_out:
                self._tl0_last_out = out
            tl0_out = out & TL0PICIDX_MASK
        return pic_out, tl0_out
