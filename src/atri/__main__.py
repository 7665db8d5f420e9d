import sys

from atri.cli import main

sys.exit(main())
