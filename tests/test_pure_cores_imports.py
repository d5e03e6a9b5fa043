"""The pure cores import nothing from the I/O libraries (asyncio, aiortc, aioice, aiohttp, av)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_MODULES = [
    "media.rtp",
    "media.vp8",
    "media.h264",
    "media.codecs",
    "sfu.vocabulary",
    "sfu.rewriter",
    "sfu.keyframe",
    "sfu.forwarder",
    "sfu.twcc",
    "sfu.bwe",
    "sfu.dynacast",
    "sfu.speaker",
    "sfu.pacer",
    "sfu.clock",
    "sfu.retransmit",
    "sfu.nack",
    "jitter.buffer",
    "media.sdp_simulcast",
    "sfu.layers",
    "tools.impair_model",
    "media.red",
    "media.recording",
    "tools.qa_metrics",
    "signaling.audit_chain",
    "signaling.tus",
    "signaling.file_links",
    "signaling.dicom_summary",
    "signaling.chat",
    "signaling.resume",
    "signaling.counters",
    "tools.client_recovery",
]
FORBIDDEN = {"asyncio", "aiortc", "aioice", "aiohttp", "av"}
OUR_PACKAGES = {"media", "sfu", "signaling", "jitter", "tools"}


def module_path(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(module: str) -> set[str]:
    """Absolute names of everything `module` imports anywhere in its source."""
    return imports_in_source(module_path(module).read_text(), module)


def imports_in_source(source: str, module: str) -> set[str]:
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.add(base)
            # `from media import rtp` imports the submodule media.rtp.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(module: str) -> dict[str, set[str]]:
    """Our modules reachable from `module` (packages' __init__ included) -> their imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        parts = name.split(".")
        candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for candidate in candidates:
            if candidate not in seen and candidate.split(".")[0] in OUR_PACKAGES:
                if module_path(candidate).exists():
                    imports = imported_modules(candidate)
                    seen[candidate] = imports
                    todo.extend(i for i in imports if i.split(".")[0] in OUR_PACKAGES)
                elif candidate == name:
                    seen[candidate] = set()  # a name imported from a module, not a module
    return seen


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_core_source_imports_no_io_library(module: str) -> None:
    offenders = {
        f"{where} imports {name}"
        for where, imports in closure(module).items()
        for name in imports
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders


def test_the_checker_catches_offenders() -> None:
    source = (
        "import struct\n"
        "from aiortc.rtp import RtpPacket\n"
        "def f() -> None:\n"
        "    import asyncio.events\n"
        "from . import sibling\n"
        "from ..media import rtp\n"
    )
    found = imports_in_source(source, "sfu.sub.mod")
    assert {n.split(".")[0] for n in found} & FORBIDDEN == {"aiortc", "asyncio"}
    assert {"sfu.sub.sibling", "sfu.media.rtp"} <= found


def test_importing_pure_cores_loads_no_io_library() -> None:
    code = (
        "import sys\n"
        f"for m in {PURE_MODULES!r}: __import__(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
