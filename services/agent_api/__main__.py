"""`python -m services.agent_api`: serve the supervisor agent's API with uvicorn."""

import sys

from services.agent_api.app import main

sys.exit(main())
