"""`python -m benchmarks.suites.lowering`."""

import sys

from benchmarks.suites.lowering.run import main

sys.exit(main())
