"""`bluesky-ptychonn keys ...`: CURVE key pairs for an endpoint and its clients."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..stream import security

    if args.action == "init":
        out = security.init_key_folder(args.folder)
    elif args.action == "new":
        public, secret = security.write_keypair(args.folder, args.name)
        out = {"public": str(public), "secret": str(secret)}
    else:  # authorize
        folder = Path(args.folder)
        lists = [security.AUTHORIZED] + ([security.CONTROL] if args.control else [])
        out = {
            "authorized": [
                str(security.authorize(args.public_key, folder / name)) for name in lists
            ]
        }
    print(json.dumps(out, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="make CURVE key pairs for an endpoint bound beyond loopback",
        description="Key folder for `serve --keys DIR` (server.key_secret, authorized/, "
        "control/) and its clients (client.key_secret + server.key, or BLUESKY_PTYCHONN_KEYS). "
        "Secret files are written with mode 0600 and never overwritten.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="server and client pairs, the client authorised")
    init.add_argument("folder")
    new = actions.add_parser("new", help="one more key pair (e.g. for a second client)")
    new.add_argument("folder")
    new.add_argument("--name", required=True, help="file stem: NAME.key, NAME.key_secret")
    auth = actions.add_parser("authorize", help="admit a client's public key file")
    auth.add_argument("folder", help="the endpoint's key folder")
    auth.add_argument("public_key", help="the client's NAME.key")
    auth.add_argument("--control", action="store_true", help="also for control requests")
    parser.set_defaults(func=run)
