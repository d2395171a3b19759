#!/bin/bash
# -----------------------------------------------------------------------------------------------
# pympec, IN-JOB mode, Grid Engine (SGE). The job starts a pympec cluster (one MPI job: rank 0 the controller,
# the other ranks engines), runs your client script against it on this first node, and stops it.
#
#   1. Copy this file, and example_client.py or your own client script, to a shared directory.
#   2. Edit the lines marked EDIT: resources, the client script, the python of your venv.
#   3. Submit from that directory:   qsub sge-injob.sh
#
# CLIENT_SCRIPT, PYTHON and MPIEXEC may instead be set in the environment you submit from
# (#$ -V passes it on). Output: pympec-injob.o<job id>
# -----------------------------------------------------------------------------------------------
#$ -N pympec-injob
# EDIT: parallel environment and slots = engines + 1
#$ -pe mpi 3
# EDIT: walltime
#$ -l h_rt=00:30:00
#$ -o pympec-injob.o$JOB_ID
#$ -j y
# SGE gives a job neither the submitter's environment nor its directory unless asked:
#$ -V
#$ -cwd
#$ -S /bin/bash
# EDIT: remove one '#' to use (queue, project)
##$ -q all.q
##$ -P myproject

CLIENT_SCRIPT=${CLIENT_SCRIPT:-example_client.py}  # EDIT: your script; it gets the connection file as argv[1]
PYTHON=${PYTHON:-python3}                           # EDIT: the python that has pympec (e.g. ~/venv/bin/python)
# mpiexec: the one beside that python (the mpich wheel's), else the one on PATH.
MPIEXEC=${MPIEXEC:-$(dirname "$(command -v "$PYTHON")")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec

# The allocation: hydra's (and Open MPI's) mpiexec read SGE's $PE_HOSTFILE themselves.
NRANKS=$NSLOTS
HOSTS=""
JOB=$JOB_ID

set -u
CONN="$PWD/pympec-$JOB.json"     # the cluster's connection file (its key makes it mode 0600)
# When the scheduler will kill the job: the controller tells clients, which warn before it.
export PYMPEC_END_TIME=$("$PYTHON" -m pympec.cluster.batch.endtime)

# Start the cluster in the background. The client runs on this node, so the controller binds
# 127.0.0.1 (its default): nothing off the node can reach it.
"$MPIEXEC" $HOSTS -n "$NRANKS" "$PYTHON" -m pympec.engine --connection-file "$CONN" &
MPI_PID=$!

# Wait, at most 120 s, for the controller to listen (it writes the connection file then).
for i in $(seq 240); do
    [ -s "$CONN" ] && break
    kill -0 "$MPI_PID" 2>/dev/null || { echo "pympec: the cluster exited before it was up" >&2; wait "$MPI_PID"; exit 1; }
    sleep 0.5
done
[ -s "$CONN" ] || { echo "pympec: no connection file after 120 s" >&2; kill "$MPI_PID"; exit 1; }

"$PYTHON" "$CLIENT_SCRIPT" "$CONN"
STATUS=$?

# Stop the cluster: ask the controller to shut down, then make sure mpiexec is gone (30 s at most).
"$PYTHON" -m pympec.cluster.cli cluster stop --connection-file "$CONN" || kill -TERM "$MPI_PID"
for i in $(seq 60); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.5; done
kill -KILL "$MPI_PID" 2>/dev/null
wait "$MPI_PID" 2>/dev/null
rm -f "$CONN"
exit $STATUS
