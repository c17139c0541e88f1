#!/usr/bin/env bash
# Stop the cluster tools/local-slurm/start.sh started in SANDBOX: its jobs cancelled, then slurmd,
# slurmctld and munged, each by the PID in its PID file (SIGTERM, SIGKILL after 15 s), and
# /etc/slurm/slurm.conf unlinked if it points into SANDBOX.
#
#   tools/local-slurm/stop.sh [SANDBOX] [--purge]     --purge: delete SANDBOX too
set -euo pipefail

say() { printf '[ta2d-slurm] %s\n' "$*" >&2; }

S="${TA2D_SLURM_DIR:-/tmp/ta2d-slurm}"
purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    *) S="$arg" ;;
  esac
done
case "$S" in /*) ;; *) S="$PWD/$S" ;; esac
source "$(cd "$(dirname "$0")" && pwd)/daemons.sh"

# jobs first, so that no job step outlives slurmd
if [ -f "$S/etc/slurm.conf" ] && daemon_pid slurmctld > /dev/null; then
  export SLURM_CONF="$S/etc/slurm.conf"
  jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    retry 10 bash -c '[ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ]' || true
  fi
fi

for daemon in slurmd slurmctld munged; do
  if pid="$(daemon_pid "$daemon")"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! retry 15 bash -c "! [ -d /proc/$pid ] || grep -q '^State:.*[ZX]' /proc/$pid/status"; then
      say "$daemon (pid $pid) ignored SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $daemon (pid $pid)"
  fi
  rm -f "$(pid_file "$daemon")"
done

if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$S/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
[ "$purge" = 1 ] && rm -rf "$S"
exit 0
