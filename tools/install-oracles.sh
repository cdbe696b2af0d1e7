#!/usr/bin/env bash
# Oracles that cannot be installed beside the course's own packages go into a side environment, .venv-oracles/.
# Today that is SDMetrics (Step 10 checks its quality scores against it): sdmetrics 0.32 requires pandas < 3, and
# installing it into .venv would downgrade the course's pandas 3 to 2.3.3.
#
# .venv-oracles is a venv of the same Python whose own site-packages hold only what differs (sdmetrics, copulas,
# plotly, pytz and pandas 2.3.3); a .pth file puts .venv's site-packages after them, so numpy, scipy and scikit-learn
# are shared. Packages are installed with --no-deps and exact pins: pip never touches .venv.
# Licences: sdmetrics is MIT; copulas (which sdmetrics imports) is source-available under the Business Source
# License 1.1, as SDV is: installed here only to run the checks, never imported by trainkit.
# Idempotent: when the pinned versions already import, it does nothing (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=.venv
SIDE=.venv-oracles
PINS=(sdmetrics==0.32.0 copulas==0.14.1 plotly==7.1.0 pandas==2.3.3 pytz==2026.6)
CHECK='import sdmetrics, copulas, plotly, pandas, scipy, sklearn
assert (sdmetrics.__version__, pandas.__version__) == ("0.32.0", "2.3.3"), (sdmetrics.__version__, pandas.__version__)
from sdmetrics.reports.single_table.quality_report import QualityReport'

if [ -x "$SIDE/bin/python" ] && "$SIDE/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "install-oracles: $SIDE is ready (sdmetrics 0.32.0, pandas 2.3.3)"
  exit 0
fi
[ -x "$MAIN/bin/python" ] || { echo "install-oracles: $MAIN is missing; run 'make setup' first." >&2; exit 1; }
base=$("$MAIN/bin/python" -c 'import sys; print(sys._base_executable)')
rm -rf "$SIDE"
"$base" -m venv "$SIDE"
main_site=$(cd "$MAIN" && pwd)/$("$MAIN/bin/python" -c 'import sysconfig, sys; print(sysconfig.get_path("purelib", vars={"base": ""}).lstrip("/"))')
side_site=$("$SIDE/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo "$main_site" > "$side_site/zz_trainkit_main_venv.pth"  # appended to sys.path after the side venv's own packages
"$SIDE/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}"
"$SIDE/bin/python" -c "$CHECK"
echo "install-oracles: $SIDE ready (sdmetrics 0.32.0 on pandas 2.3.3; numpy, scipy, scikit-learn shared with $MAIN)"
