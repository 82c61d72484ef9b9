"""`python -m helpers.local.doctor`: its command line."""

import sys

from helpers.local.doctor import main

sys.exit(main())
