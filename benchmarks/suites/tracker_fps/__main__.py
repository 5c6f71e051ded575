"""`python -m benchmarks.suites.tracker_fps`."""

import sys

from benchmarks.suites.tracker_fps.run import main

sys.exit(main())
