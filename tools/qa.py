"""QA: put a consultation under a named network profile and get a report with plots.

    bash tools/in_netns.sh .venv/bin/python -m tools.qa --profile lossy-5 --duration 60 \
        [--participants 3] [--impaired 1] [--compare-nack] [--out DIR]

Topology (one run): ``consilium serve`` runs as a subprocess in our namespace, listening and
offering ICE candidates on the impaired namespace's ``host_addr`` (tools/impair.py). Each
participant is a ``python -m tools.qa_participant`` subprocess; the first ``--impaired`` of them
(the bedside phone) run inside the impaired namespace, the others here. So every media path
crosses at most one impaired leg per direction: bedside→others the impaired uplink,
others→bedside the impaired downlink, others→others nothing (the clean control).

``--profile`` takes several profiles (run one after another into one report); ``--compare-nack``
runs each twice, with the SFU's NACK/RTX on and off (``consilium serve --no-nack``). Output in
``--out``: ``report.json`` (raw samples, per-second series, summaries, verdicts),
``report.html`` with ``plot-*.png``, the server's and participants' logs; a summary table is
printed. Exit status 0 when every run with NACK on meets its targets, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sfu.clock import now_ms
from tools.browser_rig import REPO, Server
from tools.impair import PROFILES, ImpairedNamespace, Profile, get_profile
from tools.qa_metrics import Targets
from tools.qa_report import analyse_run, format_summary, run_title, targets_dict, write_report

SETUP_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 30.0
ROOM = "qa"


def profile_loss(profile: Profile) -> float:
    """The profile's worst average packet loss over both directions (random + burst)."""
    worst = 0.0
    for spec in (profile.uplink, profile.downlink):
        loss = spec.loss + (spec.burst.loss_rate if spec.burst is not None else 0.0)
        worst = max(worst, loss)
    return worst


def participant_names(count: int, impaired: int) -> list[tuple[str, str, bool]]:
    """(name, role, impaired) for each participant: the bedside phone(s) first."""
    out: list[tuple[str, str, bool]] = []
    for i in range(count):
        if i < impaired:
            name = "bedside" if i == 0 else f"bedside{i + 1}"
            out.append((name, "bedside", True))
        elif i == impaired:
            out.append(("attending", "host", False))
        else:
            out.append((f"specialist{i - impaired}", "specialist", False))
    return out


def _proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_stats(base_url: str) -> dict[str, Any]:
    """The SFU's own view of every participant (REST stats; dev mode needs no key)."""
    out: dict[str, Any] = {}
    try:
        with urllib.request.urlopen(f"{base_url}/api/rooms/{ROOM}/participants", timeout=5) as r:
            people = json.load(r)["participants"]
        for person in people:
            url = f"{base_url}/api/rooms/{ROOM}/participants/{person['id']}/stats"
            with urllib.request.urlopen(url, timeout=5) as r:
                out[str(person.get("name", person["id"]))] = json.load(r)
    except (OSError, ValueError, KeyError) as exc:
        out["error"] = repr(exc)
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass
class _Child:
    name: str
    impaired: bool
    out_file: Path
    proc: asyncio.subprocess.Process
    joined: bool = False
    error: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            event = message.get("event")
            if event == "joined":
                self.joined = True
            elif event == "error":
                self.error = str(message.get("error"))
            elif event == "status":
                self.previous, self.status = self.status, message

    def receiving_from(self, names: list[str]) -> bool:
        video, audio = self.status.get("video", {}), self.status.get("audio", {})
        return all(video.get(n, 0) > 0 and audio.get(n, 0) > 0 for n in names if n != self.name)

    def fps_from(self) -> dict[str, float]:
        if not self.previous or not self.status:
            return {}
        dt = (self.status["t"] - self.previous["t"]) / 1000
        if dt <= 0:
            return {}
        before = self.previous.get("video", {})
        return {k: (v - before.get(k, 0)) / dt for k, v in self.status.get("video", {}).items()}


@dataclass
class RunConfig:
    profile: Profile
    nack: bool
    duration_s: float
    participants: int
    impaired: int
    size: str
    fps: int
    seed: int
    warmup_s: float
    out_dir: Path
    red: int = 0
    renack: bool = True
    keyframe_requests: bool = True
    progress: bool = True
    targets: Targets = field(default_factory=Targets)


def _tag(config: RunConfig) -> str:
    return f"{config.profile.name}-{'nack' if config.nack else 'nonack'}"


async def _start_participant(
    config: RunConfig, ns: ImpairedNamespace, url: str, name: str, role: str, impaired: bool
) -> _Child:
    out_file = config.out_dir / f"{_tag(config)}-{name}.json"
    argv = [sys.executable, "-m", "tools.qa_participant", "--url", url, "--room", ROOM]
    argv += ["--name", name, "--role", role, "--size", config.size, "--fps", str(config.fps)]
    argv += ["--ice-host", ns.peer_addr if impaired else ns.host_addr]
    argv += ["--out", str(out_file), "--max-seconds", str(config.duration_s + 300)]
    if config.red:
        argv += ["--red", str(config.red)]
    if not config.renack:
        argv += ["--no-renack"]
    if not config.keyframe_requests:
        argv += ["--no-pli"]
    if impaired:
        argv = ns.command(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSILIUM_")}
    env["PYTHONUNBUFFERED"] = "1"
    log = (config.out_dir / f"{_tag(config)}-{name}.log").open("wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    finally:
        log.close()  # the child has its own copy of the descriptor
    child = _Child(name, impaired, out_file, proc)
    child.reader = asyncio.create_task(child.read())
    return child


async def _stop(children: list[_Child]) -> None:
    for child in children:
        if child.proc.stdin is not None and not child.proc.stdin.is_closing():
            with contextlib.suppress(ConnectionError):
                child.proc.stdin.write(b"stop\n")
                child.proc.stdin.close()
    for child in children:
        try:
            await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            child.proc.kill()
            await child.proc.wait()
        if child.reader is not None:
            child.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.reader


def _postfix(children: list[_Child]) -> str:
    rates = [r for c in children for r in c.fps_from().values()]
    states = all(
        c.status.get("publish") == "connected" and c.status.get("subscribe") == "connected"
        for c in children
    )
    low = f"{min(rates):.0f}" if rates else "-"
    resumes = sum(int(c.status.get("resumes", 0)) for c in children)
    rejoins = sum(int(c.status.get("rejoins", 0)) for c in children)
    text = f"lowest fps {low}, {'connected' if states else 'NOT CONNECTED'}"
    if resumes or rejoins:
        text += f", signaling resumed {resumes}x, rejoined {rejoins}x"
    return text


async def run_once(config: RunConfig) -> dict[str, Any]:
    """One call under one profile, with the SFU's NACK/RTX on or off; the analysed run."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    people = participant_names(config.participants, config.impaired)
    names = [n for n, _, _ in people]
    async with ImpairedNamespace(config.profile, seed=config.seed, label="qa") as ns:
        server = Server(
            [ns.host_addr],
            config.out_dir / f"{_tag(config)}-server.log",
            () if config.nack else ("--no-nack",),
        )
        children: list[_Child] = []
        try:
            await asyncio.to_thread(server.wait_ready)
            url = f"http://{ns.host_addr}:{server.port}"
            for name, role, impaired in people:
                children.append(await _start_participant(config, ns, url, name, role, impaired))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETUP_TIMEOUT_S
            while not all(c.joined and c.receiving_from(names) for c in children):
                failed = [c for c in children if c.error or c.proc.returncode is not None]
                if failed or loop.time() > deadline:
                    waiting = [c.name for c in children if not c.receiving_from(names)]
                    notes.append(f"setup incomplete: not receiving everyone: {waiting}")
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(config.warmup_s)  # first keyframes, estimates settle

            start_ms = now_ms()
            server_cpu0, machine0 = _proc_cpu_s(server.proc.pid), _machine_ticks()
            bar = tqdm(
                total=round(config.duration_s),
                desc=run_title({"profile": config.profile.name, "nack": config.nack}),
                unit="s",
                disable=not config.progress,
                file=sys.stderr,
                bar_format="{desc}: {bar} {n_fmt}/{total_fmt} s{postfix}",
            )
            end_at = start_ms + round(config.duration_s * 1000)
            with bar:
                while (now := now_ms()) < end_at:
                    bar.n = min(round((now - start_ms) / 1000), bar.total)
                    bar.set_postfix_str(_postfix(children), refresh=True)
                    await asyncio.sleep(min(0.5, (end_at - now) / 1000))
                bar.n = bar.total
                bar.refresh()
            end_ms = now_ms()
            server_cpu1, machine1 = _proc_cpu_s(server.proc.pid), _machine_ticks()
            impairment = ns.stats()
            sfu_stats = await asyncio.to_thread(_server_stats, server.url)
        finally:
            await _stop(children)
            await asyncio.to_thread(server.stop)

    results: list[dict[str, Any]] = []
    for child in children:
        try:
            results.append(json.loads(child.out_file.read_text()))
        except (OSError, ValueError) as exc:
            notes.append(f"{child.name}: no result file ({exc!r})")
            results.append({"name": child.name, "error": "no result file", "timeline": []})
    seconds = (end_ms - start_ms) / 1000
    run = analyse_run(
        results,
        {c.name for c in children if c.impaired},
        start_ms,
        end_ms,
        config.fps,
        profile_loss(config.profile),
        config.targets,
    )
    busy = machine1[0] - machine0[0]
    total = machine1[1] - machine0[1]
    run.update(
        {
            "profile": config.profile.name,
            "description": config.profile.description,
            "profile_loss": profile_loss(config.profile),
            "nack": config.nack,
            "server": {
                "cpu_percent": (
                    round(100 * (server_cpu1 - server_cpu0) / seconds, 1)
                    if server_cpu0 is not None and server_cpu1 is not None
                    else None
                ),
                "stats": sfu_stats,
            },
            "machine_cpu_busy_percent": round(100 * busy / total, 1) if total else None,
            "impairment": impairment,
            "notes": notes,
            "raw": {
                r["name"]: {"video": r.get("video", {}), "audio": r.get("audio", {})}
                for r in results
            },
        }
    )
    return run


def _out_dir(text: str | None) -> Path:
    if text:
        return Path(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("qa-reports") / stamp


async def run_all(configs: list[RunConfig], out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for config in configs:
        runs.append(await run_once(config))
    return {
        "tool": "consilium tools.qa",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": meta,
        "targets": targets_dict(configs[0].targets) if configs else {},
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.qa",
        description="Run a consultation of synthetic participants under network profiles and "
        "write a report (run it inside tools/in_netns.sh).",
    )
    parser.add_argument("--profile", nargs="+", default=["lossy-5"], help="profile name(s)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per run")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--impaired", type=int, default=1, help="how many behind the profile")
    parser.add_argument(
        "--compare-nack", action="store_true", help="each profile also with the SFU's NACK off"
    )
    parser.add_argument("--out", default=None, help="report folder (default qa-reports/<time>)")
    parser.add_argument("--size", default="640x360", help="video size, WxH")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1, help="impairment random seed")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--red", type=int, default=0, choices=(0, 1, 2), help="clients' audio RED distance"
    )
    parser.add_argument(
        "--stock-aiortc-nack",
        action="store_true",
        help="clients NACK each hole once (aiortc's default) instead of retrying like browsers",
    )
    parser.add_argument(
        "--no-pli",
        action="store_true",
        help="clients never ask for a keyframe when video stalls (aiortc's default)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--list-profiles", action="store_true")
    args = parser.parse_args(argv)

    if args.list_profiles:
        for profile in PROFILES.values():
            print(f"{profile.name:12s} {profile.description}")
        return 0
    try:
        profiles = [get_profile(p) for p in args.profile]
    except ValueError as exc:
        parser.error(str(exc))
    if args.participants < 2 or not 0 <= args.impaired <= args.participants:
        parser.error("need at least 2 participants and 0 <= --impaired <= --participants")
    reason = ImpairedNamespace.unavailable_reason()
    if reason is not None:
        parser.error(f"impairment unavailable: {reason}")

    out_dir = _out_dir(args.out)
    configs = [
        RunConfig(
            profile=profile,
            nack=nack,
            duration_s=args.duration,
            participants=args.participants,
            impaired=args.impaired,
            size=args.size,
            fps=args.fps,
            seed=args.seed,
            warmup_s=args.warmup,
            out_dir=out_dir,
            red=args.red,
            renack=not args.stock_aiortc_nack,
            keyframe_requests=not args.no_pli,
            progress=not args.no_progress,
        )
        for profile in profiles
        for nack in ((True, False) if args.compare_nack else (True,))
    ]
    meta = {
        k: getattr(args, k)
        for k in ("profile", "duration", "participants", "impaired", "compare_nack", "size")
    }
    meta.update(fps=args.fps, seed=args.seed, red=args.red)
    meta["client_renack"] = not args.stock_aiortc_nack
    meta["client_pli"] = not args.no_pli
    report = asyncio.run(run_all(configs, out_dir, meta))
    written = write_report(report, out_dir)
    print(format_summary(report))
    print(f"report: {written['report.html']}  (data: {written['report.json']})")
    return 0 if all(r["passed"] for r in report["runs"] if r["nack"]) else 1


if __name__ == "__main__":
    sys.exit(main())
