"""Rendering job scripts, site config and ``pympec jobscript``: no scheduler needed.

Each rendered script is read back by a small parser of its directives, the way the scheduler reads
them, so the checks are on what PBS, SGE and Slurm would see rather than on text.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from pympec.cluster.batch import config, templates
from pympec.cluster.batch.templates import JobSpec, TemplateError, parse_walltime, render


def directives(script: str, prefix: str) -> list[list[str]]:
    """The directive lines of a job script, split into words as the scheduler reads them."""
    out = []
    for line in script.splitlines():
        if line.startswith(prefix + " "):
            out.append(shlex.split(line[len(prefix) + 1:]))
        elif line and not line.startswith("#"):
            break   # PBS, SGE and Slurm all stop reading directives at the first command
    return out


def options(script: str, prefix: str) -> dict[str, list[str]]:
    """``{option: [values...]}`` from the directives, e.g. ``{"-l": ["walltime=..", ..]}``."""
    found: dict[str, list[str]] = {}
    for words in directives(script, prefix):
        key, _, value = words[0].partition("=")
        found.setdefault(key, []).append(value or " ".join(words[1:]))
    return found


def mpiexec_line(script: str) -> list[str]:
    line = next(l for l in script.splitlines() if "pympec.engine" in l)
    return line.split()


def test_slurm_directives(pympec_dir):
    script = render(JobSpec("slurm", 4, queue="debug", account="proj", walltime="90",
                            directives=["--mem=4G"], connection_file="/shared/c.json"))
    opts = options(script, "#SBATCH")
    assert opts["--ntasks"] == ["5"]            # 4 engines + the controller
    assert opts["--partition"] == ["debug"] and opts["--account"] == ["proj"]
    assert opts["--time"] == ["01:30:00"]
    assert opts["--export"] == ["ALL"] and opts["--mem"] == ["4G"]
    assert "--nodes" not in opts and "--ntasks-per-node" not in opts   # Slurm places ranks itself
    cmd = mpiexec_line(script)
    assert cmd[cmd.index("-n") + 1] == "5"
    assert cmd[cmd.index("--connection-file") + 1] == "/shared/c.json"
    assert "export PYMPEC_END_TIME=$(( $(date +%s) + 5400 ))" in script
    assert script.startswith("#!/bin/bash\n")


def test_sge_directives(pympec_dir):
    script = render(JobSpec("sge", 2, pe="orte", queue="all.q", account="p1", walltime="2h"))
    opts = options(script, "#$")
    assert opts["-pe"] == ["orte 3"]
    assert opts["-q"] == ["all.q"] and opts["-P"] == ["p1"]
    assert opts["-l"] == ["h_rt=02:00:00"]
    assert "-V" in opts and "-cwd" in opts    # SGE passes neither environment nor directory otherwise
    assert "-n $NSLOTS" in script             # the granted slots, not a second guess


@pytest.mark.parametrize("style,resources", [("pro", "select=2:ncpus=4:mpiprocs=4"),
                                             ("torque", "nodes=2:ppn=4")])
def test_pbs_directives(pympec_dir, style, resources):
    script = render(JobSpec("pbs", 7, ppn=4, pbs_style=style, walltime="1-00:00:00", queue="workq"))
    opts = options(script, "#PBS")
    assert opts["-l"] == [resources, "walltime=24:00:00"]
    assert opts["-q"] == ["workq"] and opts["-j"] == ["oe"] and "-V" in opts
    assert "-A" not in opts                   # no account: the directive is dropped
    assert "$PBS_NODEFILE" in script
    cmd = mpiexec_line(script)
    assert cmd[cmd.index("-n") + 1] == "8"


def test_engine_options(pympec_dir):
    cmd = mpiexec_line(render(JobSpec("slurm", 2, port=4567, sshserver="me@login", ip="10.1.2.3")))
    assert cmd[cmd.index("--port") + 1] == "4567"
    assert cmd[cmd.index("--sshserver") + 1] == "me@login"   # clients tunnel through it
    script = render(JobSpec("slurm", 2, ip="10.1.2.3"))
    assert "PYMPEC_IP=10.1.2.3" in script
    # Without --ip, the job finds the node's address facing the submit host; never 0.0.0.0.
    assert "-m pympec.cluster.batch.address)" in render(JobSpec("slurm", 2))


def test_not_a_job_array(pympec_dir):
    for scheduler in templates.SCHEDULERS:
        script = render(JobSpec(scheduler, 3))
        assert "--array" not in script and "-t 1-" not in script and "-J " not in script
        assert script.count("pympec.engine") == 1


def test_layout(pympec_dir):
    assert JobSpec("pbs", 7, nodes=2).layout() == (2, 4)
    assert JobSpec("pbs", 7, ppn=3).layout() == (3, 3)
    assert JobSpec("pbs", 3).layout() == (1, 4)
    with pytest.raises(TemplateError, match="hold 4 ranks"):
        render(JobSpec("pbs", 4, nodes=2, ppn=2))
    with pytest.raises(TemplateError, match="at least 1 engine"):
        JobSpec("slurm", 0)


def test_walltime_forms():
    assert parse_walltime("01:00:00") == 3600
    assert parse_walltime("2-03:00:00") == 2 * 86400 + 3 * 3600
    assert parse_walltime("1-12") == 36 * 3600
    assert parse_walltime("05:30") == 330
    assert parse_walltime("45") == 45 * 60      # a bare number is minutes, as in Slurm
    assert parse_walltime("30s") == 30 and parse_walltime("1.5h") == 5400
    for bad in ("soon", "1:2:3:4", "0", "-5m"):
        with pytest.raises(TemplateError):
            parse_walltime(bad)


def test_unsafe_values_rejected(pympec_dir):
    with pytest.raises(TemplateError, match="spaces or shell characters"):
        render(JobSpec("slurm", 2, output="/my dir/out.txt"))
    with pytest.raises(TemplateError, match="spaces or shell"):
        render(JobSpec("slurm", 2, queue="q; rm -rf ~"))


def test_user_template(pympec_dir, tmp_path):
    own = tmp_path / "my.template"
    own.write_text("#!/bin/sh\n#X ${queue}\n# ${engines} engines, $HOME and ${SHELL_VAR} kept, $${n} literal\n"
                   "${extra_directives}\nrun ${n}\n")
    assert render(JobSpec("slurm", 2, template=str(own))) == \
        "#!/bin/sh\n# 2 engines, $HOME and ${SHELL_VAR} kept, ${n} literal\nrun 3\n"
    own.write_text("echo ${nonsense}\n")
    with pytest.raises(TemplateError, match=r"my.template:1: unknown variable \$\{nonsense\}"):
        render(JobSpec("slurm", 2, template=str(own)))
    with pytest.raises(TemplateError, match="cannot read template"):
        render(JobSpec("slurm", 2, template=str(tmp_path / "missing")))


def test_config_file_and_env(pympec_dir, monkeypatch):
    pympec_dir.mkdir(parents=True)
    (pympec_dir / "config.toml").write_text(
        '[batch]\nwalltime = "02:00:00"\nqueue = "all"\n'
        '[slurm]\nqueue = "debug"\naccount = "proj42"\ndirectives = ["--mem=1G"]\n'
        '[pbs]\npbs_style = "torque"\nppn = 16\n')
    assert config.load_defaults("slurm") == {"walltime": "02:00:00", "queue": "debug",
                                             "account": "proj42", "directives": ["--mem=1G"]}
    assert config.load_defaults("sge") == {"walltime": "02:00:00", "queue": "all"}
    assert config.load_defaults("pbs")["ppn"] == 16
    monkeypatch.setenv("PYMPEC_SLURM__QUEUE", "gpu")
    monkeypatch.setenv("PYMPEC_BATCH__ACCOUNT", "env-acct")
    monkeypatch.setenv("PYMPEC_SLURM__MPIEXEC_ARGS", "-bind-to core")
    monkeypatch.setenv("PYMPEC_SLURM__DIRECTIVES", '["--mem=2G", "--exclusive"]')
    got = config.load_defaults("slurm")
    assert got["queue"] == "gpu" and got["account"] == "env-acct"   # the environment beats the file
    assert got["mpiexec_args"] == ["-bind-to", "core"]
    assert got["directives"] == ["--mem=2G", "--exclusive"]


def test_config_errors(pympec_dir, monkeypatch):
    pympec_dir.mkdir(parents=True)
    path = pympec_dir / "config.toml"
    path.write_text("[slurm]\nqeue = 'x'\n")
    with pytest.raises(config.ConfigError, match=r"config.toml \[slurm\]: unknown key 'qeue'"):
        config.load_defaults("slurm")
    path.write_text("[slurm\n")
    with pytest.raises(config.ConfigError, match="config.toml"):
        config.load_defaults("slurm")
    path.unlink()
    monkeypatch.setenv("PYMPEC_PBS__PPN", "many")
    with pytest.raises(config.ConfigError, match="PYMPEC_PBS__PPN: bad value 'many'"):
        config.load_defaults("pbs")


@pytest.mark.parametrize("scheduler,prefix", [("slurm", "#SBATCH"), ("sge", "#$"), ("pbs", "#PBS")])
def test_jobscript_command(batch_env, scheduler, prefix):
    batch_env.dir.mkdir(parents=True)
    (batch_env.dir / "config.toml").write_text(f'[{scheduler}]\naccount = "site-acct"\n')
    proc = batch_env.cli("jobscript", "--scheduler", scheduler, "-n", "3", "--walltime", "10m",
                         "--profile", "p1", "--queue", "q1")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert str(batch_env.dir / "security" / "cluster-p1.json") in script
    assert "site-acct" in script and "q1" in script           # config and command line both apply
    assert "pympec-p1" in script                              # job name from the profile
    assert "$(( $(date +%s) + 600 ))" in script
    assert directives(script, prefix)
    # The script is valid shell.
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_jobscript_command_errors(batch_env):
    proc = batch_env.cli("jobscript", "--scheduler", "slurm", "--walltime", "soon")
    assert proc.returncode == 2 and "bad walltime 'soon'" in proc.stderr
    proc = batch_env.cli("jobscript", "-n", "2")
    assert proc.returncode == 2 and "--scheduler" in proc.stderr


def test_address_never_wildcard():
    out = subprocess.run([sys.executable, "-m", "pympec.cluster.batch.address"], capture_output=True,
                         text=True, timeout=30).stdout.strip()
    assert out and out != "0.0.0.0"
    out = subprocess.run([sys.executable, "-m", "pympec.cluster.batch.address", "127.0.0.1"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    assert out == "127.0.0.1"


# -- MPICH or Open MPI, srun, the prologue, output names ---------------------------------------

def launch_line(script: str) -> str:
    return next(l for l in script.splitlines() if l.startswith("exec ") and "pympec.engine" in l)


def test_mpich_lines(pympec_dir):
    script = render(JobSpec("slurm", 2, mpi="mpich", mpiexec="/opt/mpich/bin/mpiexec"))
    assert launch_line(script).startswith("exec /opt/mpich/bin/mpiexec -genvall ")
    assert "OMPI_" not in script and "PYMPEC_EXPORTS" not in script


@pytest.mark.parametrize("scheduler", templates.SCHEDULERS)
def test_openmpi_lines(pympec_dir, scheduler):
    script = render(JobSpec(scheduler, 2, mpi="openmpi", mpiexec="/opt/ompi/bin/mpirun"))
    line = launch_line(script)
    assert line.startswith("exec /opt/ompi/bin/mpirun $PYMPEC_EXPORTS $PYMPEC_OVERSUBSCRIBE")
    assert "-genvall" not in script
    assert ('if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 '
            'OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi') in script
    assert ("--hostfile $PYMPEC_HOSTFILE" in line) == (scheduler == "sge")


def test_openmpi_lines_run_in_bash(pympec_dir, tmp_path):
    """The Open MPI set-up lines, run by bash as the job would: -x for the variables set (and
    only those), --oversubscribe past the cores, SGE's slots as a host file."""
    script = render(JobSpec("sge", 40, mpi="openmpi", mpiexec="/opt/ompi/bin/mpirun"))
    lines = script.splitlines()
    setup = "\n".join(lines[lines.index(next(l for l in lines if l.startswith("# Open MPI"))):
                            lines.index(launch_line(script))])
    pe_hostfile = tmp_path / "pe_hostfile"
    pe_hostfile.write_text("node1 24 all.q@node1 UNDEFINED\nnode2 17 all.q@node2 UNDEFINED\n")
    env = {"PATH": os.environ["PATH"], "PYMPEC_DIR": "/x", "PYMPEC_END_TIME": "1",
           "PE_HOSTFILE": str(pe_hostfile), "JOB_ID": "77", "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", "-c", setup + '\necho "$PYMPEC_EXPORTS|$PYMPEC_OVERSUBSCRIBE"'],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    exports, over = out.stdout.splitlines()[-1].split("|")
    words = exports.split()
    assert set(words[::2]) == {"-x"}
    assert sorted(words[1::2]) == ["PATH", "PYMPEC_DIR", "PYMPEC_END_TIME"]
    assert over == "--oversubscribe"                 # 41 ranks on this machine's cores
    assert (tmp_path / "pympec-hosts.77").read_text() == "node1 slots=24\nnode2 slots=17\n"


def test_srun_lines(pympec_dir):
    script = render(JobSpec("slurm", 3, mpi="mpich", launcher="srun", pmi="pmi2"))
    assert launch_line(script).startswith("exec srun --mpi=pmi2 ")
    assert "-n 4 " in launch_line(script)
    script = render(JobSpec("slurm", 3, mpi="openmpi", launcher="srun", pmi="pmix"))
    assert launch_line(script).startswith("exec srun --mpi=pmix ") and "OMPI_" not in script
    with pytest.raises(TemplateError, match="srun is Slurm's"):
        JobSpec("pbs", 3, launcher="srun")


def test_mpi_of_an_mpiexec_not_here(pympec_dir):
    """An mpiexec that exists only on the compute nodes: rendered for MPICH, with a comment
    saying so and how to say Open MPI."""
    script = render(JobSpec("slurm", 2, mpiexec="/compute/only/mpiexec"))
    assert "# pympec: rendered for MPICH's hydra, as /compute/only/mpiexec is not a working " \
           "mpiexec" in script and "--mpi openmpi" in script
    assert launch_line(script).startswith("exec /compute/only/mpiexec -genvall ")


@pytest.mark.parametrize("scheduler", templates.SCHEDULERS)
def test_prologue_goes_before_the_launch(pympec_dir, scheduler):
    prologue = ["module load gcc/12", "source /shared/venv/bin/activate", "export OMP_NUM_THREADS=1"]
    script = render(JobSpec(scheduler, 2, prologue=prologue))
    lines = script.splitlines()
    at = lines.index("# Site prologue (--prologue, or prologue in config.toml):")
    assert lines[at + 1:at + 4] == prologue
    assert lines.index(launch_line(script)) > at + 3
    assert lines.index(next(l for l in lines if l.startswith("PYMPEC_IP="))) > at + 3
    assert "Site prologue" not in render(JobSpec(scheduler, 2))


def test_prologue_from_config_and_command_line(pympec_dir, monkeypatch):
    monkeypatch.setenv("PYMPEC_BATCH__PROLOGUE", '["module load a", "module load b"]')
    assert config.load_defaults("sge")["prologue"] == ["module load a", "module load b"]
    monkeypatch.setenv("PYMPEC_SGE__PROLOGUE", "module load c\nexport X=1\n")
    assert config.load_defaults("sge")["prologue"] == ["module load c", "export X=1"]
    out = subprocess.run([sys.executable, "-m", "pympec.cluster.cli", "jobscript", "--scheduler",
                          "sge", "--prologue", "module load d"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "\nmodule load d\n" in out.stdout and "module load c" not in out.stdout


@pytest.mark.parametrize("scheduler,directive", [
    ("slurm", "#SBATCH --output={}/batch-x.%j.out"), ("sge", "#$ -o {}/batch-x.$JOB_ID.out")])
def test_output_named_with_the_job_id(pympec_dir, scheduler, directive):
    spec = JobSpec(scheduler, 2, job_name="x")
    assert directive.format(pympec_dir / "log") in render(spec).splitlines()
    assert spec.output_of("4242") == str(pympec_dir / "log" / "batch-x.4242.out")


def test_pbs_output_named_with_the_job_id(pympec_dir):
    """PBS has no job-id pattern in -o: the script sends its output to the file itself."""
    spec = JobSpec("pbs", 2, job_name="x")
    script = render(spec)
    assert "#PBS -o /dev/null" in script
    assert f"exec >> {pympec_dir / 'log'}/batch-x.${{PYMPEC_JOB%%.*}}.out 2>&1" in script
    assert spec.output_of("4242.pbs-server") == str(pympec_dir / "log" / "batch-x.4242.out")
