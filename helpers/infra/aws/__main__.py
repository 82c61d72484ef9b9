"""`python -m helpers.infra.aws`: see helpers.infra.aws.cli."""

import sys

from helpers.infra.aws.cli import main

sys.exit(main())
