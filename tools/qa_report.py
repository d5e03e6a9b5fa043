"""From participant result files to the QA report: analysis, summary table, JSON, PNG plots, HTML.

No asyncio here: ``tools/qa.py`` runs the call and hands over what the participants wrote
(``tools/qa_participant.py`` format); this module measures it with ``tools/qa_metrics.py`` and
writes ``report.json``, one ``plot-<profile>.png`` per profile (runs with and without NACK/RTX
side by side) and ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.qa_metrics import (
    CORRUPT_PSNR_DB,
    DEFAULT_TARGETS,
    AudioSample,
    PathResult,
    Targets,
    VideoSample,
    audio_series,
    evaluate_targets,
    path_class,
    summarize_audio,
    summarize_video,
    video_series,
)


def _video_samples(rows: Sequence[Sequence[Any]]) -> list[VideoSample]:
    return [VideoSample(int(r[0]), r[1], r[2], r[3]) for r in rows]


def _audio_samples(rows: Sequence[Sequence[Any]]) -> list[AudioSample]:
    return [AudioSample(int(r[0]), int(r[1])) for r in rows if int(r[1]) >= 0]


def _outages(participant: dict[str, Any], start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Signaling outages (tools.synthetic_client ``reconnects``) that touch the window."""
    return [
        r
        for r in participant.get("reconnects", [])
        if r["dropped_ms"] <= end_ms and (r.get("back_ms") is None or r["back_ms"] >= start_ms)
    ]


def _connected_throughout(participant: dict[str, Any], start_ms: int, end_ms: int) -> bool:
    """Both peer connections up at every status sample in the window, and the socket too,
    except while it was away and came back as the same session (a resume: the media never
    stopped, the others saw "reconnecting"). A rejoin or a lost socket is a dropped call."""
    if participant.get("error"):
        return False
    rows = [r for r in participant.get("timeline", []) if start_ms <= r[0] <= end_ms]
    if not rows or not all(r[1] == "connected" and r[2] == "connected" for r in rows):
        return False
    if all(r[3] is True for r in rows):
        return True
    outages = _outages(participant, start_ms, end_ms)
    return (
        bool(outages)
        and all(o.get("outcome") == "resumed" for o in outages)
        and rows[-1][3] is True
    )


def _reconnect_facts(participant: dict[str, Any], start_ms: int, end_ms: int) -> dict[str, Any]:
    """Resumes, rejoins and time without signaling during the window."""
    outages = _outages(participant, start_ms, end_ms)
    away = [
        (o["back_ms"] if o.get("back_ms") is not None else end_ms) - o["dropped_ms"]
        for o in outages
    ]
    return {
        "resumes": sum(1 for o in outages if o.get("outcome") == "resumed"),
        "rejoins": sum(1 for o in outages if o.get("outcome") == "rejoined"),
        "reconnect_failures": sum(
            1 for o in outages if o.get("outcome") not in ("resumed", "rejoined")
        ),
        "signaling_away_ms": sum(away),
        "longest_away_ms": max(away, default=0),
    }


def _reconnect_note(facts: dict[str, Any]) -> str:
    parts = []
    for key, word in (
        ("resumes", "resumed"),
        ("rejoins", "rejoined"),
        ("reconnect_failures", "lost"),
    ):
        if facts[key]:
            parts.append(f"signaling {word} {facts[key]}x")
    if parts:
        parts.append(f"longest away {facts['longest_away_ms'] / 1000:.1f} s")
    return ", ".join(parts)


def _cpu_percent(participant: dict[str, Any], start_ms: int, end_ms: int) -> float | None:
    rows = participant.get("timeline", [])
    if len(rows) < 2:
        return None
    first = min(rows, key=lambda r: abs(r[0] - start_ms))
    last = min(rows, key=lambda r: abs(r[0] - end_ms))
    if last[0] <= first[0]:
        return None
    return round(100 * (last[4] - first[4]) * 1000 / (last[0] - first[0]), 1)


def analyse_run(
    participants: Sequence[dict[str, Any]],
    impaired: set[str],
    start_ms: int,
    end_ms: int,
    fps: float,
    profile_loss: float,
    targets: Targets = DEFAULT_TARGETS,
) -> dict[str, Any]:
    """Paths, per-participant facts and verdicts of one run, as plain JSON-able data."""
    names = [p["name"] for p in participants]
    paths: list[PathResult] = []
    out_paths: list[dict[str, Any]] = []
    for receiver in participants:
        for sender in names:
            if sender == receiver["name"]:
                continue
            video = _video_samples(receiver.get("video", {}).get(sender, []))
            # Packets into the jitter buffer (after RED): what a browser would get. The frames
            # aiortc decodes lose more (see tools.qa_metrics), kept as "audio_decoded".
            audio = _audio_samples(receiver.get("audio_rtp", {}).get(sender, []))
            decoded = _audio_samples(receiver.get("audio", {}).get(sender, []))
            result = PathResult(
                sender=sender,
                receiver=receiver["name"],
                path_class=path_class(sender in impaired, receiver["name"] in impaired),
                video=summarize_video(video, start_ms, end_ms, fps),
                audio=summarize_audio(audio, start_ms, end_ms),
            )
            paths.append(result)
            out_paths.append(
                {
                    "sender": result.sender,
                    "receiver": result.receiver,
                    "class": result.path_class,
                    "label": result.label,
                    "video": result.video.as_dict(),
                    "audio": result.audio.as_dict(),
                    "audio_decoded": summarize_audio(decoded, start_ms, end_ms).as_dict(),
                    "series": {
                        "video": video_series(video, start_ms, end_ms, fps),
                        "audio": audio_series(audio, start_ms, end_ms),
                    },
                }
            )
    connected = {p["name"]: _connected_throughout(p, start_ms, end_ms) for p in participants}
    facts = {p["name"]: _reconnect_facts(p, start_ms, end_ms) for p in participants}
    notes = {name: _reconnect_note(f) for name, f in facts.items()}
    verdicts = evaluate_targets(profile_loss, paths, connected, targets, notes)
    return {
        "window_ms": [start_ms, end_ms],
        "duration_s": round((end_ms - start_ms) / 1000, 3),
        "participants": [
            {
                "name": p["name"],
                "impaired": p["name"] in impaired,
                "error": p.get("error"),
                "connected_throughout": connected[p["name"]],
                "cpu_percent": _cpu_percent(p, start_ms, end_ms),
                "frames_sent": p.get("frames_sent", {}),
                "red": p.get("red"),
                "renacks_sent": p.get("renacks_sent"),
                "plis_sent": p.get("plis_sent"),
                "keyframe_skips": p.get("keyframe_skips"),
                **facts[p["name"]],
                "reconnects": p.get("reconnects", []),
            }
            for p in participants
        ],
        "paths": out_paths,
        "verdicts": [v.as_dict() for v in verdicts.verdicts],
        "passed": verdicts.passed,
    }


# ----------------------------------------------------------------------------- text


def run_title(run: dict[str, Any]) -> str:
    return f"{run['profile']} / NACK+RTX {'on' if run['nack'] else 'off'}"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


SUMMARY_COLUMNS = (
    "path",
    "fps",
    "freeze %",
    "freezes",
    "corrupt",
    "lat p50",
    "lat p95",
    "PSNR",
    "audio loss %",
    "hole ms",
)


def _path_row(path: dict[str, Any]) -> list[str]:
    v, a = path["video"], path["audio"]
    return [
        path["label"],
        _fmt(v["fps"]),
        _fmt(v["freeze_percent"], 2),
        _fmt(v["freeze_count"]),
        _fmt(v["corrupt_frames"]),
        _fmt(v["latency_p50_ms"], 0),
        _fmt(v["latency_p95_ms"], 0),
        _fmt(v["psnr_mean_db"]),
        _fmt(a["loss_percent"], 2),
        _fmt(a["longest_gap_ms"]),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_summary(report: dict[str, Any]) -> str:
    """The printed summary: per run, one line per path, then the target verdicts."""
    blocks: list[str] = []
    for run in report["runs"]:
        head = f"== {run_title(run)}  ({run['duration_s']:.0f} s"
        server = run.get("server", {})
        if server.get("cpu_percent") is not None:
            head += f", server CPU {server['cpu_percent']:.0f} %"
        cpus = [p["cpu_percent"] for p in run["participants"] if p["cpu_percent"] is not None]
        if cpus:
            head += f", client CPU {min(cpus):.0f}-{max(cpus):.0f} %"
        if run.get("machine_cpu_busy_percent") is not None:
            head += f", machine busy {run['machine_cpu_busy_percent']:.0f} %"
        red = [p["red"] for p in run["participants"] if p.get("red")]
        if red:
            head += f", RED recovered {sum(r.get('recovered', 0) for r in red)} audio frames"
        blocks.append(head + ")")
        blocks.append(_table(SUMMARY_COLUMNS, [_path_row(p) for p in run["paths"]]))
        blocks.append(
            "participants: " + "; ".join(_participant_line(p) for p in run["participants"])
        )
        failed = [v for v in run["verdicts"] if not v["passed"]]
        kinds = sorted({v["target"] for v in run["verdicts"]})
        verdict = "PASS" if run["passed"] else f"FAIL ({len(failed)} of {len(run['verdicts'])})"
        blocks.append(f"targets [{', '.join(kinds)}]: {verdict}")
        for v in failed:
            blocks.append(
                f"  FAIL {v['target']}: {v['subject']}: {v['measured']} ({v['criterion']})"
            )
        blocks.append("")
    return "\n".join(blocks)


def _participant_line(p: dict[str, Any]) -> str:
    """Whether the call stayed up for one participant, and what its client did to keep it."""
    text = f"{p['name']} {'up' if p.get('connected_throughout') else 'DROPPED'}"
    text += f", resumes {p.get('resumes', 0)}, rejoins {p.get('rejoins', 0)}"
    if p.get("reconnect_failures"):
        text += f", lost {p['reconnect_failures']}"
    if p.get("longest_away_ms"):
        text += f" (away {p['longest_away_ms'] / 1000:.1f} s)"
    if p.get("plis_sent") is not None:
        text += f", PLIs {p['plis_sent']}"
    return text


# ----------------------------------------------------------------------------- plots

_PLOT_ROWS = (
    ("latency (ms, log): p50 solid, p95 dashed", "latency"),
    ("frames per second", "fps"),
    ("frozen ms per second", "frozen_ms"),
    ("PSNR (dB, mean per second)", "psnr_mean_db"),
    ("audio loss (%)", "audio_loss"),
)


def _nan(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def plot_profile(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """One PNG: a column per run of the profile (NACK on, off), a row per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(runs)
    fig, axes = plt.subplots(
        len(_PLOT_ROWS),
        cols,
        figsize=(6.5 * cols, 2.3 * len(_PLOT_ROWS)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, run in enumerate(runs):
        axes[0][col].set_title(run_title(run))
        for index, p in enumerate(run["paths"]):
            colour = colours[index % len(colours)]
            v, a = p["series"]["video"], p["series"]["audio"]
            t = v["t_s"]
            ax = axes[0][col]
            ax.plot(t, _nan(v["latency_p50_ms"]), color=colour, label=p["label"])
            ax.plot(t, _nan(v["latency_p95_ms"]), color=colour, linestyle="--")
            axes[1][col].plot(t, _nan(v["fps"]), color=colour)
            axes[2][col].step(t, _nan(v["frozen_ms"]), color=colour, where="post")
            axes[3][col].plot(t, _nan(v["psnr_mean_db"]), color=colour)
            axes[4][col].plot(a["t_s"], _nan(a["loss_percent"]), color=colour)
        axes[0][col].set_yscale("log")  # 70 ms and 30 s backlogs on one axis
        axes[3][col].axhline(CORRUPT_PSNR_DB, color="red", linewidth=0.8, linestyle=":")
        axes[-1][col].set_xlabel("seconds into the measured window")
        for row, (label, _) in enumerate(_PLOT_ROWS):
            axes[row][col].grid(True, alpha=0.3)
            if col == 0:
                axes[row][col].set_ylabel(label, fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- files


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for index, row in enumerate(rows):
        cls = f' class="{classes[index]}"' if index < len(classes) and classes[index] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _profiles(report: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for run in report["runs"]:
        if run["profile"] not in seen:
            seen.append(run["profile"])
    return seen


def render_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Consilium QA report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}"
        ".fail{background:#fdd}.pass{background:#dfd}img{max-width:100%}</style></head><body>",
        "<h1>Consilium QA report</h1>",
        f"<p>{html.escape(report.get('created', ''))} — "
        f"{html.escape(json.dumps(report.get('config', {})))}</p>",
        "<p>Definitions: freeze = frame interval &gt; max(3 × average, average + 150 ms) "
        "(Chromium); corrupt = barcode unreadable or Y-plane PSNR against the sent frame "
        f"&lt; {CORRUPT_PSNR_DB:g} dB; latency = decoded here − captured there (same host "
        "clock); audio loss = 20 ms frames missing by RTP timestamp, hole = longest run of "
        "them. Raw data and every series: <a href='report.json'>report.json</a>.</p>",
    ]
    overview = []
    classes = []
    for run in report["runs"]:
        failed = sum(1 for v in run["verdicts"] if not v["passed"])
        overview.append(
            [
                run_title(run),
                "PASS" if run["passed"] else f"FAIL ({failed})",
                _fmt(run.get("server", {}).get("cpu_percent")),
                ", ".join(f"{p['name']} {_fmt(p['cpu_percent'])}" for p in run["participants"]),
                _fmt(run.get("machine_cpu_busy_percent")),
                "; ".join(_participant_line(p) for p in run["participants"]),
            ]
        )
        classes.append("pass" if run["passed"] else "fail")
    parts.append("<h2>Runs</h2>")
    parts.append(
        _html_table(
            ["run", "targets", "server CPU %", "client CPU %", "machine busy %", "participants"],
            overview,
            classes,
        )
    )
    for profile in _profiles(report):
        runs = [r for r in report["runs"] if r["profile"] == profile]
        parts.append(f"<h2>{html.escape(profile)}</h2>")
        if runs[0].get("description"):
            parts.append(f"<p>{html.escape(runs[0]['description'])}</p>")
        # Side by side: a column group per run for every path.
        header = ["path"]
        for run in runs:
            tag = "NACK on" if run["nack"] else "NACK off"
            header += [f"{tag}: {c}" for c in SUMMARY_COLUMNS[1:]]
        rows = []
        for index, p in enumerate(runs[0]["paths"]):
            row = [p["label"]]
            for run in runs:
                other = run["paths"][index] if index < len(run["paths"]) else None
                row += _path_row(other)[1:] if other else ["-"] * (len(SUMMARY_COLUMNS) - 1)
            rows.append(row)
        parts.append(_html_table(header, rows))
        if profile in plots:
            parts.append(f"<img src='{html.escape(plots[profile])}' alt='{html.escape(profile)}'>")
        for run in runs:
            parts.append(f"<h3>Targets: {html.escape(run_title(run))}</h3>")
            parts.append(
                _html_table(
                    ["target", "subject", "result", "measured", "criterion"],
                    [
                        [
                            v["target"],
                            v["subject"],
                            "pass" if v["passed"] else "FAIL",
                            v["measured"],
                            v["criterion"],
                        ]
                        for v in run["verdicts"]
                    ],
                    ["pass" if v["passed"] else "fail" for v in run["verdicts"]],
                )
            )
            if run.get("impairment"):
                parts.append(
                    "<p>Wire counters: " + html.escape(json.dumps(run["impairment"])) + "</p>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, the PNG plots and report.html; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    plots: dict[str, str] = {}
    for index, profile in enumerate(_profiles(report)):
        runs = [r for r in report["runs"] if r["profile"] == profile]
        name = f"plot-{index}-{''.join(c if c.isalnum() else '-' for c in profile)}.png"
        plot_profile(runs, out_dir / name)
        plots[profile] = name
        written[name] = out_dir / name
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False))
    written["report.json"] = json_path
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(report, plots))
    written["report.html"] = html_path
    return written


def targets_dict(targets: Targets) -> dict[str, Any]:
    return asdict(targets)
