"""``python -m runfleet.cli``: the same command as the ``runfleet`` script."""

import sys

from . import main

sys.exit(main())
