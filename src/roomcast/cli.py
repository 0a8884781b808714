"""roomcast: a LiveKit-compatible realtime audio/video/data server.

Commands: serve (run the server), token create (mint access tokens), room (lk-style room
commands against a running server), generate-keys (a new API key and secret), list-nodes (the
nodes of a Redis cluster), load-test (simulated participants).
`roomcast COMMAND --help` describes each."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence

from roomcast import __version__
from roomcast.auth import VideoGrant, create_token
from roomcast.config import Config, ConfigError, Overrides, load_config
from roomcast.durations import parse_duration
from roomcast.logs import set_context, setup_logging


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server (livekit-server compatible flags and YAML)",
        description="Run the server. Flags override the YAML config; environment variables "
        "override nothing a flag sets. Stop it with Ctrl-C (SIGINT) or SIGTERM.",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="development mode: keys devkey: secret, bind 127.0.0.1, UDP port 7882, debug "
        "logs, the playground and dashboard on",
    )
    p.add_argument("--config", dest="config_file", help="YAML config file (livekit-server keys)")
    p.add_argument(
        "--config-body", help="config as a YAML string; wins over --config (env LIVEKIT_CONFIG)"
    )
    p.add_argument("--keys", help='API keys as YAML, e.g. "APIkey: secret" (env LIVEKIT_KEYS)')
    p.add_argument("--key-file", help="YAML file of API keys (mode 600: not world-readable)")
    p.add_argument(
        "--bind",
        action="append",
        default=[],
        help="listen address, repeatable (default: all addresses; 127.0.0.1 with --dev)",
    )
    p.add_argument("--port", type=int, help="HTTP/WebSocket port (default 7880)")
    p.add_argument(
        "--node-ip", help="IP advertised in ICE candidates (env NODE_IP; default: bind address)"
    )
    p.add_argument("--udp-port", type=int, help="WebRTC UDP port (env UDP_PORT; default 7882)")
    p.add_argument(
        "--tcp-port",
        type=int,
        help="ICE over TCP port for clients without UDP (YAML rtc.tcp_port; default 7881, 0: off)",
    )
    p.add_argument("--redis-host", help="host:port of Redis: multi-node mode (env REDIS_HOST)")
    p.add_argument("--redis-password", help="Redis password (env REDIS_PASSWORD)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes sharing the ports, one per core (default 1; they share "
        "rooms through a private Redis)",
    )


def _token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="access tokens", description="Access tokens.")
    tsub = token.add_subparsers(dest="token_command", required=True)
    p = tsub.add_parser(
        "create",
        help="mint an access token",
        description="Print a signed access token (a JWT). A join token needs --room and "
        "--identity; an API token needs --create, --list or --admin --room.",
    )
    env = os.environ.get
    p.add_argument(
        "--api-key",
        default=env("LIVEKIT_API_KEY", "devkey"),
        help="API key (env LIVEKIT_API_KEY; default devkey, the --dev key)",
    )
    p.add_argument(
        "--api-secret",
        default=env("LIVEKIT_API_SECRET", "secret"),
        help="API secret (env LIVEKIT_API_SECRET; default secret, the --dev secret)",
    )
    p.add_argument("--room", default="", help="room the token is for")
    p.add_argument("--identity", default="", help="participant identity")
    p.add_argument("--name", default="", help="participant display name")
    p.add_argument("--metadata", default="", help="participant metadata")
    p.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="participant attribute (repeatable)",
    )
    p.add_argument(
        "--valid-for",
        default="6h",
        metavar="DURATION",
        help="how long the token is valid: 30m, 6h, 1h30m, or seconds (default 6h)",
    )
    p.add_argument("--join", action="store_true", help="roomJoin grant (default with --room)")
    p.add_argument("--admin", action="store_true", help="roomAdmin grant for --room")
    p.add_argument("--create", action="store_true", help="roomCreate grant")
    p.add_argument("--list", action="store_true", help="roomList grant")
    p.add_argument("--hidden", action="store_true", help="hidden participant")
    p.add_argument("--no-publish", action="store_true", help="canPublish false")
    p.add_argument("--no-subscribe", action="store_true", help="canSubscribe false")
    p.add_argument("--no-publish-data", action="store_true", help="canPublishData false")
    p.add_argument("--can-update-metadata", action="store_true", help="canUpdateOwnMetadata")
    p.add_argument("--agent", action="store_true", help="participant kind agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomcast",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"roomcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _token_parser(sub)
    from roomcast.cli_room import add_parser as add_room_parser

    add_room_parser(sub)
    sub.add_parser(
        "generate-keys",
        help="print a new random API key and secret",
        description="Print a new API key and secret, as a --keys value and as YAML for the "
        "config file.",
    )
    nodes = sub.add_parser(
        "list-nodes",
        help="list the nodes of a Redis cluster (multi-node)",
        description="List the nodes registered in Redis: state, addresses, load, liveness.",
    )
    nodes.add_argument("--config", dest="config_file", help="YAML config file with redis:")
    nodes.add_argument("--config-body", help="config as a YAML string (env LIVEKIT_CONFIG)")
    nodes.add_argument("--redis-host", help="host:port of Redis (env REDIS_HOST)")
    nodes.add_argument("--redis-password", help="Redis password (env REDIS_PASSWORD)")
    from roomcast.loadtest.cli import add_parser as add_load_test_parser

    add_load_test_parser(sub)
    return parser


def _install_uvloop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _load_or_report(overrides: Overrides) -> Config | None:
    """The configuration, or None after printing why it is invalid."""
    try:
        return load_config(overrides)
    except ConfigError as exc:
        print(f"roomcast: configuration error: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    overrides = Overrides(
        dev=args.dev,
        config_file=args.config_file,
        config_body=args.config_body,
        keys=args.keys,
        key_file=args.key_file,
        bind=args.bind,
        port=args.port,
        node_ip=args.node_ip,
        udp_port=args.udp_port,
        tcp_port=args.tcp_port,
        redis_host=args.redis_host,
        redis_password=args.redis_password,
    )
    config = _load_or_report(overrides)
    if config is None:
        return 2
    setup_logging(config.effective_log_level, config.logging.json)
    if config.rtc.use_external_ip and not config.rtc.node_ip:
        from roomcast.external_ip import ExternalIpError, discover

        try:
            address, server = discover(config.rtc.stun_servers, media_bind(config))
        except ExternalIpError as exc:
            logging.getLogger("roomcast").error("cannot start: %s", exc)
            return 1
        logging.getLogger("roomcast").info(
            "rtc.use_external_ip: STUN server %s sees this node as %s: advertising it",
            server,
            address,
        )
        config.rtc.node_ip = address
    if args.workers < 1:
        print("roomcast: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        set_context(process="supervisor")
        return _serve_workers(config, args.workers)
    from roomcast.edge.ports import BindError
    from roomcast.ids import NODE_PREFIX, new_sid
    from roomcast.server import Server
    from roomcast.supervisor import STARTUP_FAILED, worker_index

    node_id = new_sid(NODE_PREFIX, 8)
    set_context(node=node_id, worker=worker_index())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = Server(config, node_id=node_id)
        await server.run_until(stop)

    _install_uvloop()
    try:
        asyncio.run(run())
    except BindError as exc:
        logging.getLogger("roomcast").error("cannot start: %s", exc)
        return STARTUP_FAILED if worker_index() is not None else 1
    except OSError as exc:
        logging.getLogger("roomcast").error("cannot start: %s", exc)
        return 1
    return 0


def media_bind(config: Config) -> str:
    """Where the media socket binds: ask STUN from there, so a multi-homed host answers with
    the address its media uses."""
    addresses = config.bind_addresses
    return addresses[0] if len(addresses) == 1 else "0.0.0.0"


def _serve_workers(config: Config, count: int) -> int:
    from roomcast.edge.ports import BindError, check_ports
    from roomcast.supervisor import WorkersError, supervise

    _install_uvloop()
    try:
        check_ports(config, count)
        return asyncio.run(supervise(config, count, sys.argv[1:]))
    except BindError as exc:
        logging.getLogger("roomcast").error("cannot start: %s", exc)
        return 1
    except WorkersError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2


def token_create(args: argparse.Namespace) -> int:
    def usage(message: str) -> int:
        print(f"roomcast: {message}", file=sys.stderr)
        return 2

    attributes: dict[str, str] = {}
    for item in args.attribute:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return usage(f"--attribute expects KEY=VALUE, got {item!r}")
        attributes[key] = value
    try:
        valid_for = parse_duration(args.valid_for)
    except ValueError as exc:
        return usage(f"--valid-for: {exc}")
    if valid_for <= 0:
        return usage("--valid-for must be longer than zero")
    join = args.join or (bool(args.room) and not (args.admin or args.create or args.list))
    if join and not args.identity:
        return usage("a join token needs --identity")
    if join and not args.room:
        return usage("a join token needs --room")
    if args.admin and not args.room:
        return usage("--admin grants roomAdmin of one room: give --room")
    if not (join or args.admin or args.create or args.list):
        return usage(
            "nothing to grant: give --room and --identity (a join token), "
            "or --create, --list, --admin --room (an API token)"
        )
    grant = VideoGrant(
        room_join=join,
        room=args.room,
        room_admin=args.admin,
        room_create=args.create,
        room_list=args.list,
        hidden=args.hidden,
        can_publish=False if args.no_publish else None,
        can_subscribe=False if args.no_subscribe else None,
        can_publish_data=False if args.no_publish_data else None,
        can_update_own_metadata=True if args.can_update_metadata else None,
    )
    print(
        create_token(
            args.api_key,
            args.api_secret,
            identity=args.identity,
            name=args.name,
            metadata=args.metadata,
            attributes=attributes,
            video=grant,
            kind="agent" if args.agent else "",
            ttl_seconds=valid_for,
        )
    )
    return 0


def list_nodes(args: argparse.Namespace) -> int:
    from roomcast.routing.registry import list_nodes as read_nodes

    overrides = Overrides(
        config_file=args.config_file,
        config_body=args.config_body,
        keys="unused: unused",  # only redis settings matter here
        redis_host=args.redis_host,
        redis_password=args.redis_password,
    )
    config = _load_or_report(overrides)
    if config is None:
        return 2
    if not config.redis.enabled:
        print("roomcast: list-nodes needs --redis-host or redis.address", file=sys.stderr)
        return 2
    try:
        nodes = asyncio.run(read_nodes(config.redis))
    except OSError as exc:
        print(f"roomcast: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    print(f"{'node':14} {'state':9} {'http':28} {'rtc':22} {'rooms':>5} {'clients':>7} "
          f"{'cpu':>6} {'sysload':>7} {'alive':>5}")  # fmt: skip
    for node, alive in nodes:
        stats = node.stats
        print(
            f"{node.id:14} {node.state:9} {node.http_url:28} {node.rtc_address:22} "
            f"{stats.rooms:>5} {stats.clients:>7} {stats.cpu_load:>6.2f} {stats.sysload:>7.2f} "
            f"{'yes' if alive else 'no':>5}"
        )
    return 0


def generate_keys() -> int:
    key = "API" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
    secret = secrets.token_urlsafe(32)
    print(f"API key:    {key}\nAPI secret: {secret}\n")
    print("On the command line (or LIVEKIT_KEYS):")
    print(f'  roomcast serve --keys "{key}: {secret}"\n')
    print("In the config file (livekit.yaml):")
    print(f"keys:\n  {key}: {secret}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "token":
        return token_create(args)
    if args.command == "room":
        from roomcast.cli_room import main as room

        return room(args)
    if args.command == "list-nodes":
        return list_nodes(args)
    if args.command == "load-test":
        from roomcast.loadtest.cli import main as load_test

        return load_test(args)
    return generate_keys()
