"""`python -m closedloop.server.cli`: the same as the `closedloop` command (the tests run it this way)."""

import sys

from . import main

sys.exit(main())
