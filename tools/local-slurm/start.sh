#!/usr/bin/env bash
# Start a real single-node SLURM cluster for ta2d's SLURM tests (tests/workflow/test_slurm.py).
#
#   tools/local-slurm/start.sh [SANDBOX]      SANDBOX: $TA2D_SLURM_DIR, else /tmp/ta2d-slurm
#
# Installs slurmctld, slurmd, the SLURM client and munge with apt-get when a binary is missing
# (Debian, as root), writes a one-node cluster's config into SANDBOX and starts munged, slurmctld
# and slurmd with every state, log, PID file and key under SANDBOX. Prints one line on stdout, the
# partition name, and exits 0 once the node is idle. Running it again keeps the daemons that are
# still alive (checked by PID file and command name) and restarts all of them when the config changed.
# tools/local-slurm/stop.sh stops exactly what this started.
#
# ta2d's profile (profiles/slurm) asks the executor plugin to poll `squeue`, so no accounting
# database (slurmdbd) is needed. The SLURM test asks for a GPU per network training job, so the
# node can advertise fake GPUs (gres/gpu backed by /dev/null-like device nodes).
#
# Environment (optional):
#   TA2D_SLURM_PARTITION   partition name                                      [debug]
#   TA2D_SLURM_CPUS        CPUs the node advertises (more than the hardware is fine) [hardware]
#   TA2D_SLURM_MEM_MB      memory the node advertises, MB                         [hardware]
#   TA2D_SLURM_FAKE_GPUS   number of fake GPUs (gres/gpu)                         [0]
#   TA2D_SLURM_PORT        slurmctld port; slurmd listens on the next one        [6817]
#   TA2D_SLURM_TIMEOUT     seconds to wait for the node to become idle           [60]
#   TA2D_SLURM_NO_INSTALL  1: never run apt-get                                   [0]
#
# One side effect outside SANDBOX: /etc/slurm/slurm.conf becomes a symlink to SANDBOX's config.
# The plugin's job step runs a nested srun with every SLURM_* variable (SLURM_CONF too) removed, so
# the config must be found at SLURM's compiled-in path. A real config found there is refused.
set -euo pipefail

say() { printf '[ta2d-slurm] %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

S="${1:-${TA2D_SLURM_DIR:-/tmp/ta2d-slurm}}"
PART="${TA2D_SLURM_PARTITION:-debug}"
GPUS="${TA2D_SLURM_FAKE_GPUS:-0}"
PORT="${TA2D_SLURM_PORT:-6817}"
TIMEOUT="${TA2D_SLURM_TIMEOUT:-60}"
ETC_CONF=/etc/slurm/slurm.conf
MARK="# written by ta2d tools/local-slurm/start.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
started=$SECONDS

[ "$(id -u)" = 0 ] || fail "run as root: slurmd and the daemons here run as root"
case "$S" in /*) ;; *) S="$PWD/$S" ;; esac
[[ "$S" =~ ^[A-Za-z0-9_./-]+$ ]] || fail "sandbox path may hold only letters, digits and _ . / -: $S"
# munge's unix socket lives under SANDBOX; socket paths are limited to about 108 bytes
[ "${#S}" -le 80 ] || fail "sandbox path longer than 80 characters: $S"
[[ "$PART" =~ ^[A-Za-z0-9_-]+$ ]] || fail "bad partition name: $PART"
[[ "$GPUS" =~ ^[0-9]+$ ]] || fail "TA2D_SLURM_FAKE_GPUS must be a whole number: $GPUS"

# --- packages, only when missing -----------------------------------------------------------------
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${TA2D_SLURM_NO_INSTALL:-0}" = 1 ] && fail "missing packages ${missing[*]} and TA2D_SLURM_NO_INSTALL=1"
  command -v apt-get >/dev/null || fail "missing packages ${missing[*]} and no apt-get to install them"
  say "apt-get install ${missing[*]}"
  # the packages' init scripts must not start system-wide daemons: deny them while installing
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1; fi
  rc=0
  { DEBIAN_FRONTEND=noninteractive apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [ "$own_policy" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || fail "apt-get install failed (exit $rc)"
fi

# --- sandbox and config --------------------------------------------------------------------------
mkdir -p "$S"/{etc,state,spool,log,run,munge,key,dev}
chmod 755 "$S" "$S"/{etc,log,run,munge,dev}
chmod 700 "$S"/key "$S"/state
NODE="$(hostname -s)"
HW="$(slurmd -C 2>/dev/null | head -1)" || true
[ -n "$HW" ] || fail "slurmd -C printed nothing"
hw() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HW"; }
if [ -n "${TA2D_SLURM_CPUS:-}${TA2D_SLURM_MEM_MB:-}" ]; then
  OVERRIDE="SlurmdParameters=config_overrides"  # let the node advertise other CPUs/memory than it has
else
  OVERRIDE=""
fi
if [ -n "${TA2D_SLURM_CPUS:-}" ]; then
  TOPOLOGY="CPUs=$TA2D_SLURM_CPUS"
else
  TOPOLOGY="CPUs=$(hw CPUs) Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"
fi
MEM="${TA2D_SLURM_MEM_MB:-$(hw RealMemory)}"
SOCKET="$S/munge/munge.socket"
GRES_NODE=""
GRES_TYPES=""
: > "$S/etc/gres.conf.new"
if [ "$GPUS" -gt 0 ]; then
  for ((i = 0; i < GPUS; i++)); do
    # SLURM drops a GPU that has no File=; these have /dev/null's device numbers
    [ -e "$S/dev/gpu$i" ] || mknod "$S/dev/gpu$i" c 1 3
  done
  GRES_NODE=" Gres=gpu:$GPUS"
  GRES_TYPES="GresTypes=gpu"
  echo "NodeName=$NODE Name=gpu File=$S/dev/gpu[0-$((GPUS - 1))]" > "$S/etc/gres.conf.new"
fi
cat > "$S/etc/slurm.conf.new" <<EOF
$MARK for $S: rerun it rather than edit
ClusterName=ta2d
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# finished jobs stay in squeue this long: the plugin's squeue status checks must still see them
MinJobAge=300
KillWait=5
Waittime=0
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
$GRES_TYPES
$OVERRIDE
NodeName=$NODE NodeAddr=127.0.0.1 $TOPOLOGY RealMemory=$MEM$GRES_NODE State=UNKNOWN
PartitionName=$PART Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

source "$HERE/daemons.sh"

if ! cmp -s "$S/etc/slurm.conf.new" "$S/etc/slurm.conf" 2>/dev/null \
   || ! cmp -s "$S/etc/gres.conf.new" "$S/etc/gres.conf" 2>/dev/null; then
  if daemon_pid slurmctld >/dev/null || daemon_pid slurmd >/dev/null; then
    say "config changed: restarting this sandbox's daemons"
    "$HERE/stop.sh" "$S" >&2
  fi
fi
mv -f "$S/etc/slurm.conf.new" "$S/etc/slurm.conf"
mv -f "$S/etc/gres.conf.new" "$S/etc/gres.conf"
export SLURM_CONF="$S/etc/slurm.conf"

mkdir -p /etc/slurm
if [ -e "$ETC_CONF" ] && ! grep -q "^$MARK" "$ETC_CONF" 2>/dev/null; then
  fail "$ETC_CONF is this machine's own SLURM config; ta2d's test cluster will not replace it"
fi
ln -sfn "$S/etc/slurm.conf" "$ETC_CONF"
printf 'export SLURM_CONF=%s\nexport TA2D_SLURM_DIR=%s\nexport TA2D_SLURM_PARTITION=%s\n' \
  "$S/etc/slurm.conf" "$S" "$PART" > "$S/env.sh"

# --- daemons -------------------------------------------------------------------------------------
if ! daemon_pid munged >/dev/null; then
  if [ ! -s "$S/key/munge.key" ]; then
    dd if=/dev/urandom of="$S/key/munge.key" bs=1024 count=1 status=none
  fi
  chmod 600 "$S/key/munge.key"
  rm -f "$SOCKET" "$SOCKET.lock"
  munged --socket="$SOCKET" --key-file="$S/key/munge.key" --pid-file="$(pid_file munged)" \
         --seed-file="$S/key/munged.seed" --log-file="$S/log/munged.log" \
    || fail "munged did not start: $S/log/munged.log"
  retry 10 munge -S "$SOCKET" -n || fail "munged does not answer on $SOCKET"
fi
for daemon in slurmctld slurmd; do
  daemon_pid "$daemon" >/dev/null && continue
  rm -f "$(pid_file "$daemon")"
  "$daemon" || fail "$daemon did not start: $S/log/$daemon.log"
  retry 20 daemon_pid "$daemon" || fail "$daemon did not stay up: $S/log/$daemon.log"
done
retry 20 scontrol ping || fail "slurmctld does not answer: $S/log/slurmctld.log"

# --- wait until the node takes jobs --------------------------------------------------------------
resumed=0
deadline=$((SECONDS + TIMEOUT))
while :; do
  state="$(sinfo -h -p "$PART" -n "$NODE" -o %t 2>/dev/null | head -1 || true)"
  case "$state" in
    idle | mix | alloc) break ;;
    down* | drain* | drng* | fail*)
      # a state saved by an earlier cluster in this sandbox: clear it once
      [ "$resumed" = 0 ] && { scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; resumed=1; } ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    scontrol show node "$NODE" >&2 || true
    fail "node $NODE is '$state' after ${TIMEOUT} s: logs in $S/log"
  fi
  sleep 0.3
done
say "node $NODE $state, partition $PART, sandbox $S, ready after $((SECONDS - started)) s (source $S/env.sh)"
echo "$PART"
