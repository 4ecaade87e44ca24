# Sourced by the build scripts: compile through ccache where it is installed (tools/install-deps.sh
# installs it), with paths taken relative to the checkout so that another clone of the same
# sources (CI's fresh one) finds what this one compiled. SNAPVK_CCACHE=0 turns it off.
CCACHE_FLAGS=()
if [ "${SNAPVK_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  export CCACHE_NOHASHDIR=1
  CCACHE_FLAGS=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
