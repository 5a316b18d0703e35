"""``python -m lib_sliders``: see ``cli.py``."""

from .cli import main

raise SystemExit(main())
