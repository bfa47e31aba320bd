"""``python -m upr_faces_engine``: the ``upr-faces`` command."""

import sys

from .cli import main

sys.exit(main())
