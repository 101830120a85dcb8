"""`make bench`: speed and memory figures, measured in one run.

No benchmark exists yet: the engine's hot paths (CDC dispatch, workflow throughput, API reads)
arrive with their issues, and each brings its benchmark here. Until then this says so plainly
instead of printing numbers that measure nothing.
"""

import sys


def main() -> int:
    print("make bench: no benchmarks are defined yet; nothing was measured.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
