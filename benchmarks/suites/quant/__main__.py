"""`python -m benchmarks.suites.quant`."""

import sys

from benchmarks.suites.quant.run import main

sys.exit(main())
