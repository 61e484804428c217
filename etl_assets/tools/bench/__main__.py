import sys

from etl_assets.tools.bench import main

sys.exit(main())
