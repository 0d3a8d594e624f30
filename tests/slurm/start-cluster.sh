#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (Debian's packages, run as root, no
# systemd, no cgroups, no accounting), for the tests of `snakemake --profile slurm`.
# Every wait is bounded. Stop it with tests/slurm/stop-cluster.sh.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

cpus=$(nproc)
gpus=2
# leave room for the OS and the submitting snakemake
memory_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=valuedrift-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# finished jobs stay in the controller's record for an hour: squeue answers the status checks
# and the tests read what each job asked for (scontrol show jobs)
MinJobAge=3600
# GPUs that SLURM counts and hands out, though the machine has none: jobs ask for GPUs as they do
# on a real cluster (--gpus=N) and get scheduled by that count (the stand-ins train on the CPU)
GresTypes=gpu
NodeName=localhost CPUs=${cpus} RealMemory=${memory_mb} Gres=gpu:${gpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd counts a GPU per device file: empty files stand in for /dev/nvidia0, /dev/nvidia1
touch $(seq -f "/dev/valuedrift-gpu%g" 0 $((gpus - 1)))
echo "NodeName=localhost Name=gpu File=/dev/valuedrift-gpu[0-$((gpus - 1))]" > /etc/slurm/gres.conf

[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld -c  # -c: no state of an earlier cluster (a node drained then)
pgrep -x slurmd >/dev/null || slurmd -N localhost

for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  if [ "$state" = "idle" ]; then
    echo "SLURM is up: node localhost idle, ${cpus} CPUs, ${memory_mb} MB"
    exit 0
  fi
  sleep 1
done
echo "SLURM did not come up in 60 s (node state: '${state:-none}')" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
