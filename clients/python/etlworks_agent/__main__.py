"""``python -m etlworks_agent``: the command-line tool (see ``etlworks_agent.main``)."""

import sys

from etlworks_agent import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m etlworks_agent"))
