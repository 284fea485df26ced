"""``python -m lung_nodule_mtl`` runs the ``lung-nodule-mtl`` command."""

import sys

from lung_nodule_mtl.cli.main import main

sys.exit(main())
