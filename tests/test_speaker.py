"""Dominant speaker detection from audio levels."""

from __future__ import annotations

from sfu.speaker import MIN_HOLD_MS, ActiveSpeakerDetector


def talk(d: ActiveSpeakerDetector, who: str, level: int, start: int, end: int) -> None:
    for t in range(start, end, 20):  # one Opus packet every 20 ms
        d.on_level(who, level, t)


def test_nobody_speaks_nobody_dominates() -> None:
    d = ActiveSpeakerDetector()
    talk(d, "a", 127, 0, 1000)
    assert d.dominant(1000) is None


def test_the_loudest_speaker_dominates() -> None:
    d = ActiveSpeakerDetector()
    talk(d, "a", 30, 0, 1000)
    talk(d, "b", 55, 0, 1000)
    assert d.dominant(1000) == "a"


def test_a_challenger_takes_over_only_after_the_hold_and_clearly_louder() -> None:
    d = ActiveSpeakerDetector()
    talk(d, "a", 30, 0, 1000)
    assert d.dominant(1000) == "a"
    talk(d, "b", 20, 1000, 1500)  # a short loud interjection during a's hold time
    talk(d, "a", 30, 1000, 1500)
    assert d.dominant(1500) == "a"
    talk(d, "b", 20, 1500, 4000)  # a fell silent, b keeps talking
    assert d.dominant(4000) == "b"
    assert d.changes == 2
    assert MIN_HOLD_MS <= 4000


def test_forgetting_the_speaker_frees_the_floor() -> None:
    d = ActiveSpeakerDetector()
    talk(d, "a", 30, 0, 500)
    assert d.dominant(500) == "a"
    d.forget("a")
    talk(d, "b", 50, 500, 800)
    assert d.dominant(800) == "b"
