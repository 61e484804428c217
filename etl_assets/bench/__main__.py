import sys

from etl_assets.bench import main

sys.exit(main())
