import sys

from stridelab.cli import main

sys.exit(main())
