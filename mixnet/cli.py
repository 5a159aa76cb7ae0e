"""``mixnet``: one command, a subcommand per role.

Each role package may provide ``<role>/cli.py`` with ``register(subparsers)``; that function adds
its subcommand and sets ``func`` on its parser to a handler ``(args) -> int`` (the exit status).
Handlers print one JSON object on stdout when ``--json`` is given. User errors surface as one line
on stderr and a non-zero status, never a traceback; Ctrl-C anywhere (also inside trio's task
groups, which wrap it in exception groups) is the one line ``mixnet: interrupted`` and status
130. The conventions every command follows are in ``docs/cli.md``. Before any command runs, the
process gets a private umask (every file it creates is 0600, every folder 0700) and its
descriptor limit raised to the hard limit (:func:`mixcore.process.prepare_process`): this is the
entry of every role.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

import mixcore
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixcore.process import prepare_process
from mixnet.report import verdict_ok

#: Role packages whose ``cli`` module is mounted when it exists, in help order.
ROLE_CLIS = ("directory", "mixnode", "client", "simulations")
#: The top-level commands each role's ``register`` adds, so that running one imports only its
#: own role (a messenger command need not load the authority's or the node's code to start).
#: ``tests/mixnet/test_cli.py`` checks this table against what the roles register.
ROLE_COMMANDS = {
    "directory": ("directory",),
    "mixnode": ("mixnode",),
    "client": ("client", "contact", "send", "retry", "inbox", "read", "group", "timer", "status",
               "chat"),
    "simulations": ("simulate",),
}


def _params_command(args: argparse.Namespace) -> int:
    if args.join:
        from mixcore.net.join import join_network  # noqa: PLC0415  # trio/httpx only here

        _, verified = join_network(args.join, wait=0.0)
        params = verified.document.params
        whose = f"the network's (signed consensus of epoch {verified.epoch})"
    elif args.testnet:
        from mixnet.testnet import Options, testnet_params  # noqa: PLC0415  # heavy imports

        params = testnet_params(Options())
        whose = "mixnet testnet's (with its default options; genesis is the start time)"
    else:
        params = NetworkParams()
        whose = ("built-in defaults (a network sets its own: see mixnet params --join "
                 "BOOTSTRAP, or --testnet)")
    if args.json:
        print(json.dumps(params.to_dict()))
    else:
        print(f"network parameters: {whose}")
        for name, value in params.to_dict().items():
            print(f"  {name:16} {value}")
    return 0


def _testnet_command(args: argparse.Namespace) -> int:
    from mixnet.faults import parse_faults  # noqa: PLC0415
    from mixnet.testnet import Options, run_testnet  # noqa: PLC0415  # heavy imports

    options = Options(
        duration=args.duration,
        clients=args.clients,
        layers=args.layers,
        mixes_per_layer=args.mixes_per_layer,
        authorities=args.authorities,
        providers=args.providers,
        mean_hop_delay=args.mean_hop_delay,
        epoch_length=args.epoch_length,
        message_interval=args.message_interval,
        seed=args.seed,
        chaos=args.chaos,
        keep_running=args.keep_running,
        directory=args.resume or args.dir,
        resume=args.resume is not None,
        trace=args.trace,
        json=args.json,
        soak=args.soak,
        soak_interval=args.soak_interval,
        hosts=args.hosts,
        faults=parse_faults(args.faults) if args.faults is not None else None,
    )
    summary = run_testnet(options)
    return 0 if verdict_ok(summary) else 1


def _register_testnet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path  # noqa: PLC0415

    p = sub.add_parser("testnet", help="run a whole network on this machine and report")
    p.add_argument("--duration", type=float, default=60.0, metavar="SECONDS",
                   help="seconds of traffic between the testnet's clients (default 60)")
    p.add_argument("--clients", type=int, default=4, metavar="N",
                   help="client daemons the testnet runs itself (default 4)")
    p.add_argument("--layers", type=int, default=3, metavar="N", help="mix layers (default 3)")
    p.add_argument("--mixes-per-layer", type=int, default=2, metavar="N",
                   help="mixes in each layer (default 2)")
    p.add_argument("--authorities", type=int, default=3, metavar="N",
                   help="directory authorities (default 3)")
    p.add_argument("--providers", type=int, default=2, metavar="N",
                   help="providers (default 2)")
    p.add_argument("--mean-hop-delay", type=float, default=0.1, metavar="SECONDS",
                   help="mean of each hop's exponential delay (default 0.1)")
    p.add_argument("--epoch-length", type=float, default=20.0, metavar="SECONDS",
                   help="seconds per epoch: key rotation and consensus (default 20)")
    p.add_argument("--message-interval", type=float, default=3.0, metavar="SECONDS",
                   help="mean seconds between two messages of one client")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the traffic's random choices (default: random)")
    p.add_argument("--chaos", action="store_true",
                   help="SIGKILL and restart a mix and a provider, stop an authority")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the network up after the report, for clients to join")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dir", type=Path, default=None, metavar="DIR",
                       help="keep configs, keys and logs in DIR (an empty or new folder)")
    where.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="restart the network kept in DIR with its keys and ports")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE",
                   help="record every link event (time, from, to, size) for mixnet simulate trace")
    p.add_argument("--hosts", choices=("local", "netns"), default="local",
                   help="local: every process on 127.0.0.1 (default); netns: each in its own "
                        "network namespace and address on a private bridge (needs root)")
    p.add_argument("--faults", default=None, metavar="SPEC",
                   help="with --hosts netns, faults on every link between hosts, e.g. "
                        "latency=40ms,jitter=10ms,loss=1%%,partition=mix2:30s[@10s] "
                        "(docs/testnet.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--soak", action="store_true",
                   help="sample every process's RSS, descriptors and database sizes while the "
                        "traffic runs; fail if one grows without bound (docs/testnet.md)")
    p.add_argument("--soak-interval", type=float, default=60.0, metavar="SECONDS",
                   help="seconds between two soak samples (default 60)")
    p.set_defaults(func=_testnet_command)


def roles_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The roles whose commands ``argv`` may need: the one its command belongs to, or all
    (no command yet, ``--help``, an unknown word: argparse then lists every command)."""
    words = [a for a in argv if not a.startswith("-")]
    if words:
        if words[0] in ("params", "testnet"):
            return ()
        for role, commands in ROLE_COMMANDS.items():
            if words[0] in commands:
                return (role,)
    return ROLE_CLIS


def build_parser(roles: Sequence[str] = ROLE_CLIS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet", description="Metadata-minimizing mixnet messenger."
    )
    parser.add_argument("--version", action="version", version=f"mixnet {mixcore.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    params = sub.add_parser("params", help="print network parameters (defaults, or a network's)")
    whose = params.add_mutually_exclusive_group()
    whose.add_argument("--join", metavar="BOOTSTRAP",
                       help="a network's own, verified from its signed consensus")
    whose.add_argument("--testnet", action="store_true", help="the ones mixnet testnet uses")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(func=_params_command)
    _register_testnet(sub)
    for role in (r for r in ROLE_CLIS if r in roles):
        try:
            module = importlib.import_module(f"{role}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"{role}.cli":
                raise
            continue
        module.register(sub)
    return parser


def _first_mixnet_error(group: BaseExceptionGroup[BaseException]) -> MixnetError | None:
    """The first project error inside (nested) exception groups: a user error raised in a
    task is still one line, not a traceback."""
    matched = group.subgroup(MixnetError)
    if matched is None:
        return None
    exc: BaseException = matched
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc if isinstance(exc, MixnetError) else None


def run_command(argv: Sequence[str] | None = None) -> int:
    """Parse and run one command, letting every exception through (for callers that run
    commands in-process, like the testnet harness: a user error stays the error it is, and
    Ctrl-C stays a KeyboardInterrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(roles=roles_for(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args))


def _interrupted(group: BaseExceptionGroup[BaseException]) -> bool:
    return group.subgroup(KeyboardInterrupt) is not None


def _first_os_error(group: BaseExceptionGroup[BaseException]) -> OSError | None:
    matched = group.subgroup(OSError)
    exc: BaseException | None = matched
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


def main(argv: Sequence[str] | None = None) -> int:
    prepare_process()
    try:
        return run_command(argv)
    except KeyboardInterrupt:
        print("mixnet: interrupted", file=sys.stderr)
        return 130
    except MixnetError as exc:
        print(f"mixnet: error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # trio nurseries wrap what their tasks raised
        if _interrupted(group):
            print("mixnet: interrupted", file=sys.stderr)
            return 130
        error: BaseException | None = _first_mixnet_error(group) or _first_os_error(group)
        if error is None:
            raise
        print(f"mixnet: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
