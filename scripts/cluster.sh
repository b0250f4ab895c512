#!/usr/bin/env bash
# `make cluster`: a single-node Slurm cluster and a local image registry on this host, from Debian's
# packages (slurm-wlm, munge, docker-registry), for `--backend slurm` and its tests. Idempotent: what
# answers already is left alone. Processes end with the session that started them, so `make test` calls
# this every time.
#   Slurm:    munged + slurmctld + slurmd, one node (this host, its cores and memory, 2 GPUs declared as
#             GRES with no device files: jobs ask for GPUs exactly as on a real cluster, and this host's
#             engine then refuses them, as it has none), partition "debug". Config: /etc/slurm/slurm.conf.
#   Registry: 127.0.0.1:5000 (DLBENCH_REGISTRY_ADDR), no auth, data under /var/lib/dlbench-registry.
# Elsewhere (not root, not Debian/Ubuntu): prints what to set up and exits 2.
set -euo pipefail

REGISTRY_ADDR=${DLBENCH_REGISTRY_ADDR:-127.0.0.1:5000}
LOG_DIR=${DLBENCH_CLUSTER_LOG_DIR:-/var/log/dlbench-cluster}
WAIT_S=${DLBENCH_CLUSTER_WAIT_S:-60}

slurm_answers() { command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
registry_answers() { timeout 5 bash -c "exec 3<>/dev/tcp/${REGISTRY_ADDR%:*}/${REGISTRY_ADDR##*:}" 2>/dev/null; }

if slurm_answers && registry_answers; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cluster: no Slurm cluster and registry answer here and this host is not a Debian/Ubuntu host where we" \
       "are root, so \`make cluster\` cannot set them up. Point the Slurm backend at your cluster (sinfo must" \
       "answer) and name its registry with --registry HOST:PORT/PREFIX or \`registry:\` in matrix.yaml." >&2
  exit 2
fi

missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
  echo "cluster: installing ${missing[*]} from the distribution (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$LOG_DIR"

# ---- registry
if ! registry_answers; then
  mkdir -p /etc/dlbench /var/lib/dlbench-registry
  cat > /etc/dlbench/registry.yml <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/dlbench-registry
  delete:
    enabled: true
http:
  addr: ${REGISTRY_ADDR}
CONF
  echo "cluster: starting the image registry on $REGISTRY_ADDR (log: $LOG_DIR/registry.log)"
  setsid nohup docker-registry serve /etc/dlbench/registry.yml >>"$LOG_DIR/registry.log" 2>&1 </dev/null &
fi

# ---- munge
if ! pgrep -x munged >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
fi

# ---- slurm
if ! slurm_answers; then
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd
  cat > /etc/slurm/slurm.conf <<CONF
# written by dlbench scripts/cluster.sh: a single-node test cluster
ClusterName=dlbench
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# finished jobs stay visible to scontrol for 10 minutes: how the backend reads their end state
MinJobAge=600
KillWait=10
GresTypes=gpu
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  # Two GPUs with stand-in device files: slurmd counts GRES by their files and has no GPU to detect here.
  cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${host} Name=gpu File=/dev/null
NodeName=${host} Name=gpu File=/dev/zero
CONF
  echo "cluster: starting slurmctld and slurmd (logs: $LOG_DIR)"
  pgrep -x slurmctld >/dev/null 2>&1 || slurmctld
  pgrep -x slurmd >/dev/null 2>&1 || slurmd
fi

for _ in $(seq 1 "$WAIT_S"); do
  # a node drained by an earlier configuration (or a restart) is put back in service
  if timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(drain|drained|down|inval)'; then
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  fi
  if slurm_answers && registry_answers; then
    echo "cluster: Slurm (node $(hostname -s)) and the registry ($REGISTRY_ADDR) answer"
    exit 0
  fi
  sleep 1
done
echo "cluster: Slurm or the registry did not answer within ${WAIT_S}s; logs under $LOG_DIR (last lines below)." >&2
tail -n 10 "$LOG_DIR"/*.log >&2 || true
exit 2
