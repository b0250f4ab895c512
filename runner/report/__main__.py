"""`python -m runner.report`."""

import sys

from runner.report import main

sys.exit(main())
