"""`python -m benchmarks.suites.quant_w4`."""

import sys

from benchmarks.suites.quant_w4.run import main

sys.exit(main())
