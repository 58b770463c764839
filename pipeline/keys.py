"""Make CURVE certificates for the pipeline's workers.

    python -m pipeline.keys DIR NAME [NAME ...] [--force]

Writes ``DIR/NAME.key`` (public, to hand out) and ``DIR/NAME.key_secret`` (secret, readable
by its owner only) for every NAME. The inference worker uses its secret certificate
(``--server-key``) and a folder holding the public certificates of the clients it admits
(``--allowed-clients``); every capture, replay and sinks worker uses its own secret
certificate (``--client-key``) and the inference worker's public one (``--server-public``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.transport import create_certificates

log = logging.getLogger("pipeline.keys")
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def make_keys(directory: str | Path, names: list[str], force: bool = False) -> list[tuple[Path, Path]]:
    """Create one certificate pair per name; refuses (ValueError) to overwrite unless ``force``."""
    directory = Path(directory)
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"{name!r}: a key name is letters, digits, '-', '_' or '.' (not first)")
        secret = directory / f"{name}.key_secret"
        if secret.exists() and not force:
            raise ValueError(f"{secret}: already exists (--force replaces it)")
    written = []
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        for name in names:
            public, secret = create_certificates(directory, name)
            public.chmod(0o644)
            written.append((public, secret))
    finally:
        os.umask(old_umask)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.keys", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[4:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="folder to write the certificates into (created if missing)")
    parser.add_argument("names", nargs="+", metavar="NAME", help="one certificate pair per name, e.g. server camera1")
    parser.add_argument("--force", action="store_true", help="replace existing certificates of these names")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def keys() -> int:
        for public, secret in make_keys(args.directory, args.names, args.force):
            log.info("wrote %s (public) and %s (secret)", public, secret)
        return 0

    return run_cli("keys", keys, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
