#!/usr/bin/env bash
# Install / extract the real offline brain MRI that training and the data tests use
# (see shared/design/data-sources.md). Idempotent; fails loudly if a file is missing afterwards.
#
#   bash scripts/get_data.sh            # data folder: $GEM3D_DATA_DIR or <repo>/work_data
#
# Sources: Debian mricron-data (Colin27), Debian insighttoolkit5-examples (ITK KmeansTest T1),
# pip nilearn (MNI152 2009a), pyradiomics 3.0.1 sdist (brain1 image + label only, sha256 checked).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${GEM3D_DATA_DIR:-$REPO/work_data}"
PYTHON="${PYTHON:-python}"
SDIST_SHA256="47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
MRICRON=/usr/share/mricron/templates
ITK=/usr/share/doc/insighttoolkit5-examples/examples/Data

die() { echo "get_data.sh: ERROR: $*" >&2; exit 1; }

need_apt=()
[ -f "$MRICRON/ch2.nii.gz" ] && [ -f "$MRICRON/ch2bet.nii.gz" ] || need_apt+=(mricron-data)
[ -f "$ITK/KmeansTest_T1UCharRaw.nii.gz" ] || need_apt+=(insighttoolkit5-examples)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
fi

"$PYTHON" -c "import nilearn" 2>/dev/null || "$PYTHON" -m pip install nilearn

SDIST_DIR="$DATA_DIR/pyradiomics-sdist"
BRAIN1="$SDIST_DIR/pyradiomics-3.0.1/data"
if [ ! -f "$BRAIN1/brain1_image.nrrd" ] || [ ! -f "$BRAIN1/brain1_label.nrrd" ]; then
  mkdir -p "$SDIST_DIR"
  ARCHIVE="$SDIST_DIR/pyradiomics-3.0.1.tar.gz"
  if [ ! -f "$ARCHIVE" ]; then
    # pip runs the sdist's setup.py egg_info even for `download`: numpy + versioneer must be present.
    "$PYTHON" -m pip install numpy versioneer setuptools
    "$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation \
      -d "$SDIST_DIR" pyradiomics==3.0.1
  fi
  echo "$SDIST_SHA256  $ARCHIVE" | sha256sum -c - || { rm -f "$ARCHIVE"; die "pyradiomics sdist checksum mismatch (removed; rerun)"; }
  tar -xzf "$ARCHIVE" -C "$SDIST_DIR" --wildcards \
    'pyradiomics-3.0.1/data/brain1_*.nrrd' 'pyradiomics-3.0.1/LICENSE.txt'
  rm -f "$ARCHIVE"
fi

missing=0
for f in "$MRICRON/ch2.nii.gz" "$MRICRON/ch2bet.nii.gz" \
         "$ITK/KmeansTest_T1UCharRaw.nii.gz" "$ITK/KmeansTest_T1RawSkullStrip.nii.gz" \
         "$BRAIN1/brain1_image.nrrd" "$BRAIN1/brain1_label.nrrd" "$SDIST_DIR/pyradiomics-3.0.1/LICENSE.txt"; do
  [ -f "$f" ] || { echo "get_data.sh: missing $f" >&2; missing=1; }
done
"$PYTHON" - <<'PY' || missing=1
from nilearn import datasets
import nibabel as nib
for fn in (datasets.load_mni152_template, datasets.load_mni152_brain_mask,
           datasets.load_mni152_gm_template, datasets.load_mni152_wm_template):
    img = fn(resolution=2) if fn is not datasets.load_mni152_gm_template and fn is not datasets.load_mni152_wm_template else fn()
    assert img.shape[0] > 0
PY
[ "$missing" -eq 0 ] || die "offline data incomplete (a slim image may drop /usr/share/doc: check dpkg path-exclude rules)"
echo "GEM3D_DATA_DIR=$DATA_DIR"
echo "get_data.sh: all offline data present"
