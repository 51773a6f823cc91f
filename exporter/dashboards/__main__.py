"""`python -m exporter.dashboards --out DIR`: regenerate the committed dashboard JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from exporter.dashboards import write_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.dashboards",
                                     description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("grafana/dashboards"),
                        help="directory for the dashboard JSON files (default: %(default)s)")
    parser.add_argument("--native-out", type=Path, default=Path("grafana/dashboards-native"),
                        help="directory for the variant over native histograms "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    for path in [*write_all(args.out), *write_all(args.native_out, native=True)]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
