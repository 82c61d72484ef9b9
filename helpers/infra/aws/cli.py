"""`python -m helpers.infra.aws identity | quotas | refresh-prices`."""

from __future__ import annotations

import argparse
import sys

from helpers.infra.aws.account import AwsUnavailable, identity, quotas
from helpers.infra.aws.prices import refresh_price_table


def main(argv: list[str] | None = None) -> int:
    """Command line: identity, quotas, refresh-prices."""
    parser = argparse.ArgumentParser(prog="python -m helpers.infra.aws", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("identity", "quotas", "refresh-prices"))
    args = parser.parse_args(argv)
    try:
        if args.command == "identity":
            print(identity())
        elif args.command == "quotas":
            for name, q in quotas().items():
                print(f"{name}: {q.spec.name} ({q.spec.quota_code}) = {q.value:g} {q.unit} [{q.source}]")
        else:
            from helpers.target import Target

            print(f"wrote {refresh_price_table(Target('eks'))}")  # this command line is the eks side by definition
    except AwsUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    return 0
