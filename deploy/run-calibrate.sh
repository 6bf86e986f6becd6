#!/usr/bin/env bash
# The daskcal *driver* job: calibrateExposure.py then calibrateCatalog.py on one tract.
#
# The driver is small (1 core): it holds the Dask scheduler and submits the worker jobs
# itself through dask-jobqueue (so sbatch/qsub must work from a compute node), with the
# site settings of deploy/jobqueue-{slurm,pbs}.yaml. Its walltime must cover both steps,
# including the time worker jobs wait in the queue.
#
# Slurm:  export REPO=/data/HSC RERUN=test ID="field=NGC604 tract=0 ccd=0..8^10..103"
#         export VENV=/path/to/daskcal/.venv
#         sbatch -p PARTITION -A ACCOUNT deploy/run-calibrate.sh   # sbatch passes your env
# PBS:    (same exports), then qsub -V -q QUEUE -A PROJECT -v BATCH_TYPE=pbs deploy/run-calibrate.sh
#
# Variables: REPO, RERUN, ID (required; ID is the --id words, split on spaces);
# VENV (default: ./.venv of the submission folder); BATCH_TYPE (slurm | pbs, default slurm);
# CORES (workers per job, 16), NODES (worker jobs, 4), TIME (expected seconds per CCD, 600:
# sets the worker walltime); EXTRA_ARGS (more options for both commands, e.g. "--doraise").
# Exit code: that of the first command that fails (1: some data ids failed, 2: usage error).
#
# The header below asks for the driver's own resources; queue and account are best given
# on the sbatch/qsub command line as above (or uncomment and edit the ## lines).
#SBATCH --job-name=daskcal-driver
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=24:00:00
#SBATCH --output=daskcal-driver-%j.log
##SBATCH --partition=EDIT-ME
##SBATCH --account=EDIT-ME
#PBS -N daskcal-driver
#PBS -l select=1:ncpus=1:mem=4gb
#PBS -l walltime=24:00:00
#PBS -j oe
##PBS -q EDIT-ME
##PBS -A EDIT-ME

set -euo pipefail

# PBS starts jobs in $HOME; Slurm in the submission folder. Run where the job was submitted,
# so that relative paths (log-directory, VENV default) mean the same in both.
cd "${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}"

: "${REPO:?set REPO to the repository root (the folder with _mapper)}"
: "${RERUN:?set RERUN, e.g. RERUN=test or RERUN=in:out}"
: "${ID:?set ID to the --id words, e.g. ID=\"field=NGC604 tract=0 ccd=0..8^10..103\"}"
VENV=${VENV:-$PWD/.venv}
BATCH_TYPE=${BATCH_TYPE:-slurm}

if [[ ! -f "$VENV/bin/activate" ]]; then
    echo "run-calibrate.sh: no virtual environment at VENV=$VENV (set VENV)" >&2
    exit 2
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

read -r -a id_words <<< "$ID"
read -r -a extra <<< "${EXTRA_ARGS:-}"
args=(
    "$REPO" --rerun "$RERUN" --id "${id_words[@]}"
    --batch-type="${BATCH_TYPE:-slurm}"
    --cores="${CORES:-16}" --nodes="${NODES:-4}" --time="${TIME:-600}"
    ${extra[@]+"${extra[@]}"}
)

echo "run-calibrate.sh: $(date -u +%FT%TZ) on $(hostname); python $(command -v python)"
calibrateExposure.py "${args[@]}" --job daskcal-calexp
calibrateCatalog.py "${args[@]}" --job daskcal-calsrc
echo "run-calibrate.sh: $(date -u +%FT%TZ) done"
