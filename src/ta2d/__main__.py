import sys

from ta2d.cli import main

sys.exit(main())
