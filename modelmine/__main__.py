import sys

from modelmine.cli import main

sys.exit(main())
