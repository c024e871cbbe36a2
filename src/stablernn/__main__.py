"""``python -m stablernn`` (and ``torchrun -m stablernn``) runs the command line."""

import sys

from stablernn.cli import main

sys.exit(main())
