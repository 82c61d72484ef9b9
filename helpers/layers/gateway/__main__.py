"""`python -m helpers.layers.gateway [--target eks]`: print the gateway's config.yaml for a target."""

import argparse
import sys

from helpers.layers.gateway.config import config_text
from helpers.target import TARGETS, Target

parser = argparse.ArgumentParser(prog="python -m helpers.layers.gateway", description=__doc__)
parser.add_argument("--target", choices=TARGETS, required=True)
print(config_text(Target(parser.parse_args().target)))
sys.exit(0)
