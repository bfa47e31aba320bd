"""``python -m custom_components.upr_faces.engine``: the ``upr-faces`` command."""

import sys

from .cli import main

sys.exit(main())
