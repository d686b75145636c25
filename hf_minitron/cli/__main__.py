import sys

from hf_minitron.cli import main

sys.exit(main())
