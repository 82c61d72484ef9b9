"""`python -m helpers.layers.models`: its command line."""

import sys

from helpers.layers.models import main

sys.exit(main())
