"""scripts/deps.sh: `make run` installs only what building and running need, `make test` the
test toolchain on top, `make bench` the benchmarks' peers on top of that.

Oracles: the Makefile's own pkg-config list (PKGS) and dpkg, which says which installed package
owns each library's .pc file; the Makefile's recipes as `make -n` prints them.
(That an unchanged tree builds nothing is checked by `make check-rebuild`, which `make test`
runs right after building.)
"""
import os
import re
import subprocess

from conftest import ROOT

DEPS = os.path.join(ROOT, "scripts", "deps.sh")
TEST_TOOLCHAIN = {"python3-pytest", "python3-requests", "python3-numpy", "python3-scipy",
                  "python3-pandas", "python3-sklearn", "python3-xgboost", "libcmocka-dev",
                  "clang", "libclang-rt-14-dev"}


def packages(*mode):
    cp = subprocess.run(["sh", DEPS, *mode, "--list"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    return cp.stdout.split()


def makefile_pkgs():
    with open(os.path.join(ROOT, "Makefile")) as f:
        m = re.search(r"^PKGS\s*:=\s*(.*)$", f.read(), re.M)
    return m.group(1).split()


def pc_owner(pkg):
    d = subprocess.run(["pkg-config", "--variable=pcfiledir", pkg], stdout=subprocess.PIPE,
                       text=True, timeout=60).stdout.strip()
    out = subprocess.run(["dpkg", "-S", os.path.join(d, pkg + ".pc")], stdout=subprocess.PIPE,
                         text=True, timeout=60).stdout
    return out.split(":")[0]


def test_run_mode_is_the_build_and_nothing_of_the_test_toolchain():
    run = packages("--run")
    assert not TEST_TOOLCHAIN & set(run), TEST_TOOLCHAIN & set(run)
    # Every library the Makefile links comes from a package of the run list.
    for pkg in makefile_pkgs():
        assert pc_owner(pkg) in run, pkg
    assert {"build-essential", "pkg-config"} <= set(run)


def test_no_argument_means_run_and_modes_nest():
    assert packages() == packages("--run")
    run, test, bench = (set(packages(m)) for m in ("--run", "--test", "--bench"))
    assert run < test < bench
    assert TEST_TOOLCHAIN <= test
    cp = subprocess.run(["sh", DEPS, "--bogus"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, timeout=60)
    assert cp.returncode == 2 and cp.stderr.startswith("usage: scripts/deps.sh")


def plain_make_env():
    """The environment without the variables a parent make passes down (under `make asan`
    MAKEFLAGS carries BUILD=build-asan, and make exports command-line variables to the
    environment too), so `make -n run` shows what a user's run does."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BUILD", "SANITIZE")}


def test_make_run_uses_the_run_mode_and_builds_in_parallel():
    cp = subprocess.run(["make", "-n", "--no-print-directory", "run"], cwd=ROOT, env=plain_make_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "./scripts/deps.sh --run"
    assert re.fullmatch(r"make --no-print-directory -j\d+ build/basalt", lines[1]), lines[1]
    assert lines[-1] == "build/basalt serve --data ./data"
    # make test (through its deps prerequisite) installs the test mode, and checks the rebuild.
    cp = subprocess.run(["make", "-n", "--no-print-directory", "deps"], cwd=ROOT, env=plain_make_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert cp.stdout == "./scripts/deps.sh --test\n", cp.stdout
    with open(os.path.join(ROOT, "Makefile")) as f:
        recipe = re.search(r"^test: deps\n((?:\t.*\n)+)", f.read(), re.M).group(1)
    assert "\t$(MAKE) check-rebuild\n" in recipe, recipe
