#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, for testing the Snakemake slurm profile.
#
#   scripts/slurm_local.sh up      install (Debian packages) and start munged, slurmctld, slurmd
#   scripts/slurm_local.sh down    stop them by PID and remove the pid files
#   scripts/slurm_local.sh status  print whether the controller answers and the node state
#
# Needs root and apt-get (Debian/Ubuntu). No systemd: containers usually have no init system, so
# the packages' postinst cannot start the services and we start every daemon by hand. No
# accounting (no slurmdbd): `sacct` then fails, which is why profiles/slurm polls with squeue.
# `up` is idempotent: daemons already running are left alone.
set -euo pipefail

readonly PACKAGES=(munge slurmctld slurmd slurm-client)
readonly CONF=/etc/slurm/slurm.conf
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly MUNGE_PID=/run/munge/munged.pid
readonly LOG_DIR=/var/log/slurm
# slurmd is started with -N to this name, so it matches NodeName= whatever the hostname is.
readonly NODE=localhost

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# True when the pid file names a live process.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up within ${seconds}s (see $LOG_DIR/)"
}

controller_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_ready() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
  running "$MUNGE_PID" && return 0
  rm -f "$MUNGE_PID"
  # The Debian package generates /etc/munge/munge.key in its postinst.
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (reinstall munge)"
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged munge -n
}

write_config() {
  # slurmd -C reports what the node really has; RealMemory above it would drain the node.
  local node_line cpus memory
  node_line=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
  memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  [ -n "$cpus" ] && [ -n "$memory" ] || die "cannot parse 'slurmd -C': $node_line"
  local wanted
  wanted=$(cat <<CONF
# Written by scripts/slurm_local.sh: single node, no accounting, no cgroups.
ClusterName=localcluster
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol this long; the profile's squeue polling needs it.
MinJobAge=300
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$wanted" ]; then return 0; fi
  install -d /etc/slurm
  printf '%s\n' "$wanted" > "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  # A running controller would keep the old node definition.
  if running "$CTLD_PID"; then scontrol reconfigure >/dev/null; fi
}

up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (starts system daemons)"
  install_packages
  start_munge
  write_config
  install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$LOG_DIR"
  if ! running "$CTLD_PID"; then
    rm -f "$CTLD_PID"
    /usr/sbin/slurmctld
  fi
  wait_for 30 slurmctld controller_up
  if ! running "$SLURMD_PID"; then
    rm -f "$SLURMD_PID"
    /usr/sbin/slurmd -N "$NODE"
  fi
  # A node left DOWN by an earlier unclean stop comes back by itself (ReturnToService=2),
  # but only once slurmd has registered; resume it explicitly when it is still marked down.
  if sinfo -h -N -n "$NODE" -o %T 2>/dev/null | grep -Eq '^(down|drain)'; then
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  fi
  wait_for 30 "node $NODE" node_ready
  sinfo
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME
  local pidfile=$1 name=$2 pid
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
      log "stopped $name ($pid)"
    fi
    # A stale slurmctld.pid makes the package's prerm (scancel) fail on removal.
    rm -f "$pidfile"
  fi
}

down() {
  stop_pidfile "$SLURMD_PID" slurmd
  stop_pidfile "$CTLD_PID" slurmctld
  stop_pidfile "$MUNGE_PID" munged
}

status() {
  if controller_up; then sinfo; else echo "slurmctld not responding"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
