import sys

from etl_assets.cli import main

sys.exit(main())
