import sys

from tripletlab import main

sys.exit(main())
