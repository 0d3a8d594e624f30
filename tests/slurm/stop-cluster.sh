#!/usr/bin/env bash
# Stop the single-node SLURM started by start-cluster.sh. The config goes too: while it exists
# with no controller running, every snakemake command waits ~10 s on SLURM.
scancel --user=root 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf /dev/valuedrift-gpu*
exit 0
