"""`python -m modelgate ...`: the same as the `modelgate` console script."""

import sys

from modelgate.cli import main

sys.exit(main())
