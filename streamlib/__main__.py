"""``python -m streamlib run module:app``: the same as the ``streamlib`` command."""

import sys

from ._runner import main

sys.exit(main())
