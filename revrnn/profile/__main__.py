"""``python -m revrnn.profile ...`` is ``revrnn profile ...``."""
import sys

from ..cli import main

sys.exit(main(["profile", *sys.argv[1:]]))
