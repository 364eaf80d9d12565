"""`python -m node.cli`: the `castnet` command."""

import sys

from node.cli.main import main

sys.exit(main())
