"""``python -m rainbow_aio`` runs the ``rainbow-aio`` command line."""

from .cli import main

raise SystemExit(main())
