"""The closing lines of scripts/test: each tier's wall time and the ten slowest tests of the run.

    python3 scripts/test_report.py RESULTS_DIR TIER=SECONDS ...

RESULTS_DIR holds the JUnit XML files that each pytest phase wrote (``<tier>.xml``); a test's time
there is its setup, call and teardown together. Only the standard library: it runs after a failed
run too, whatever is installed.
"""

from __future__ import annotations

import glob
import os
import sys
import xml.etree.ElementTree as ET
from typing import List, Tuple


def slowest(results_dir: str, count: int = 10) -> List[Tuple[float, str, str]]:
    """(seconds, tier, test id) of the ``count`` slowest test cases in every XML file of the run."""
    cases = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.xml"))):
        tier = os.path.splitext(os.path.basename(path))[0]
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        for case in root.iter("testcase"):
            name = "%s::%s" % (case.get("classname", "").replace(".", "/"), case.get("name", ""))
            cases.append((float(case.get("time") or 0), tier, name))
    cases.sort(reverse=True)
    return cases[:count]


def minutes(seconds: float) -> str:
    return "%d min %02d s" % divmod(int(round(seconds)), 60)


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results_dir, tiers = argv[0], argv[1:]
    print("\n== time per tier ==")
    for item in tiers:
        name, _sep, seconds = item.partition("=")
        print("  %-16s %6d s  (%s)" % (name, int(seconds), minutes(float(seconds))))
    top = slowest(results_dir)
    if top:
        print("== the %d slowest tests ==" % len(top))
        for seconds, tier, name in top:
            print("  %7.1f s  %-15s %s" % (seconds, tier, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
