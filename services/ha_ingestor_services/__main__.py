"""``python -m ha_ingestor_services``: the same as the ha-ingestor-services command."""

import sys

from .cli import main

sys.exit(main())
