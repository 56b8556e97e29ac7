from classifiers.cli import main
import sys

sys.exit(main())
