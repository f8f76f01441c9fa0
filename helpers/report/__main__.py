"""`python -m helpers.report`: fold JUnit files into the status lists, or list the attestations to sign."""
import sys

from helpers.report.results import main

if __name__ == "__main__":
    sys.exit(main())
