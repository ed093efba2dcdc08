"""``python -m autoencoders``: the same command as ``autoencoders``."""

import sys

from autoencoders.cli import main

sys.exit(main())
