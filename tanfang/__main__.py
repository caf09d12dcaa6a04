import sys

from tanfang.cli import main

sys.exit(main())
