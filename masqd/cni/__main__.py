"""`python -m masqd.cni`: the same entry point as the `masq-cni` executable."""

import sys

from masqd.cni.main import main

sys.exit(main())
