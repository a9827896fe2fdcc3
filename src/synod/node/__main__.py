"""``python -m synod.node --config FILE``: the same as ``synod node``."""

import sys

from synod.cli.node import node_main

sys.exit(node_main(sys.argv[1:]))
