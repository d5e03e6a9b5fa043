"""``consilium`` command line: ``consilium serve`` and ``consilium audit verify``."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from signaling.app import create_app
from signaling.audit_chain import Anchor, verify
from signaling.config import Settings, build_parser, data_dir_from, settings_from
from signaling.storage.sqlite import SqliteStore


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert or not settings.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=_ssl_context(settings))
    await site.start()
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{settings.scheme}://{shown_host}:{settings.port}/"
    print(f"Consilium listening on {url}", flush=True)
    if settings.dev_mode:
        print(f"Dev mode (no secret set): open {url}?room=demo&name=Alice in two tabs", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def audit_verify(data_dir: str, anchor: Anchor | None = None) -> int:
    """Print OK and the entry count, or the first bad entry and why (exit status 1)."""
    store = SqliteStore.in_dir(data_dir)
    if not store.path.exists():
        print(f"no audit database at {store.path}", file=sys.stderr)
        return 1
    try:
        result = verify(store.iter_all(), anchor)
    finally:
        store.close()
    if result.ok:
        print(f"OK: {result.count} audit entries, chain intact ({store.path})")
        return 0
    print(
        f"FAILED at entry {result.first_bad_seq}: {result.reason} "
        f"({result.count} entries before it are intact; {store.path})"
    )
    return 1


def audit_head(data_dir: str) -> int:
    """Print the last entry as SEQ:HASH (after checking the chain up to it)."""
    store = SqliteStore.in_dir(data_dir)
    if not store.path.exists():
        print(f"no audit database at {store.path}", file=sys.stderr)
        return 1
    try:
        last = None
        for entry in store.iter_all():
            last = entry
        result = verify(store.iter_all())
    finally:
        store.close()
    if not result.ok:
        print(f"FAILED at entry {result.first_bad_seq}: {result.reason}", file=sys.stderr)
        return 1
    if last is None:
        print("the audit trail is empty", file=sys.stderr)
        return 1
    print(Anchor(last.seq, last.hash))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "audit":
        if args.audit_command == "head":
            return audit_head(data_dir_from(args))
        try:
            anchor = Anchor.parse(args.anchor) if args.anchor else None
        except ValueError as exc:
            parser.error(str(exc))
        return audit_verify(data_dir_from(args), anchor)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        uvloop = None  # type: ignore[assignment]
    try:
        if uvloop is not None:
            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
