"""``python -m tensorly_cross.cli``: the ``tensorly-cross`` command."""

import sys

from . import main

sys.exit(main())
