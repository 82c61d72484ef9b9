"""`python -m helpers.infra.manifests`: render and check from a terminal (see helpers.infra.manifests.cli)."""

import sys

from helpers.infra.manifests.cli import main

sys.exit(main())
