"""The README's walkthrough, run as written against a real server, so it cannot drift.

From the "## Walkthrough" heading to the next "## " heading:
- a ```python block whose first line is `# NAME.py` is saved as NAME.py (the text says to);
- the ```sh blocks run in order, in one bash (`set -e`, stderr merged into stdout, as in a
  terminal), in a scratch directory that links `build/basalt` (the binary under test) and
  `tools/`, with BASALT_URL / BASALT_API_KEY exported for a fresh server;
- a ```text block right after a sh block is that block's output: compared line by line, where
  `…` stands for any characters within a line and a line holding only `…` for any lines;
- a sh block preceded by `<!-- readme-test: instead of the previous block -->` is an
  alternative: the first run skips it, a second run (fresh server and directory) runs it in
  place of the block before it.
"""
import os
import re
import subprocess

import pytest

from conftest import BASALT_BIN, ROOT, START_TIMEOUT, Server, clean_env

README = os.path.join(ROOT, "README.md")
INSTEAD = "<!-- readme-test: instead of the previous block -->"
FENCE_RE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def walkthrough_blocks(text):
    """[(info, body, preceded_by_instead_marker)] of the walkthrough section, in order."""
    start = text.index("\n## Walkthrough")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    blocks = []
    pos = 0
    for m in FENCE_RE.finditer(section):
        between = section[pos:m.start()]
        blocks.append((m.group(1), m.group(2), between.rstrip().endswith(INSTEAD),
                       between.strip() == ""))
        pos = m.end()
    return blocks


def steps(blocks, alternatives):
    """(files {name: text}, [(shell text, expected output or None)]) for one run: with
    alternatives, each marked block replaces the sh block before it, else it is skipped."""
    files, run = {}, []
    for i, (info, body, instead, adjacent) in enumerate(blocks):
        if info == "python":
            first = body.splitlines()[0]
            m = re.fullmatch(r"# (\S+\.py)", first.strip())
            assert m, "a python block must start with '# NAME.py': %r" % first
            files[m.group(1)] = body
        elif info == "sh":
            if instead and not alternatives:
                run.append(None)  # placeholder: keeps the expected output paired
                continue
            if instead:
                assert run and run[-1] is not None, "nothing to replace before block %d" % i
                run[-1] = None
            run.append([body, None])
        elif info == "text":
            assert adjacent and run, "a text block must follow a sh block (block %d)" % i
            if run[-1] is not None:
                run[-1][1] = body
        else:
            raise AssertionError("unexpected ```%s block in the walkthrough" % info)
    return files, [tuple(s) for s in run if s is not None]


def matches(expected, got):
    """None if got matches expected (… = any characters in a line; a line of only … = any
    lines), else a message."""
    pattern = ""
    for line in expected.splitlines():
        if line.strip() == "…":
            pattern += r"(?:.*\n)*?"
        else:
            pattern += ".*?".join(re.escape(p) for p in line.split("…")) + r"\n"
    if re.fullmatch(pattern, got):
        return None
    return "expected (… = anything):\n%s\ngot:\n%s" % (expected, got)


def run_walkthrough(workdir, alternatives):
    """Runs the walkthrough against a fresh server; returns [(expected, got)] per sh block."""
    with open(README) as f:
        files, run = steps(walkthrough_blocks(f.read()), alternatives)
    os.makedirs(os.path.join(workdir, "build"))
    os.symlink(BASALT_BIN, os.path.join(workdir, "build", "basalt"))
    os.symlink(os.path.join(ROOT, "tools"), os.path.join(workdir, "tools"))
    for name, text in files.items():
        with open(os.path.join(workdir, name), "w") as f:
            f.write(text)
    marks = ["@@readme-block-%d@@" % i for i in range(len(run))]
    script = "set -e\n" + "".join("echo %s\n%s" % (m, body) for m, (body, _) in zip(marks, run))
    os.makedirs(os.path.join(workdir, "server"))
    srv = Server(workdir=os.path.join(workdir, "server"))
    try:
        srv.start()
        env = clean_env({"BASALT_URL": srv.url, "BASALT_API_KEY": srv.admin_key})
        cp = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=10 * START_TIMEOUT)
        assert srv.running(), srv.stderr()
        srv.stop()
        assert not srv.sanitizer_reports(), srv.sanitizer_reports()
    finally:
        srv.cleanup()
    out = cp.stdout
    assert cp.returncode == 0, "the walkthrough failed (exit %d):\n%s" % (cp.returncode, out)
    results = []
    for i, (m, (body, expected)) in enumerate(zip(marks, run)):
        chunk = out.split(m + "\n", 1)[1]
        if i + 1 < len(marks):
            chunk = chunk.split(marks[i + 1] + "\n", 1)[0]
        results.append((body, expected, chunk))
    return results


@pytest.mark.parametrize("alternatives", [False, True], ids=["as-written", "alternatives"])
def test_readme_walkthrough_runs_as_written(tmp_path, alternatives):
    results = run_walkthrough(str(tmp_path), alternatives)
    assert len(results) >= 6
    for body, expected, got in results:
        if expected is None:
            assert got == "", "a block that prints must show its output:\n%s\n%s" % (body, got)
        else:
            problem = matches(expected, got)
            assert problem is None, "README block:\n%s\n%s" % (body, problem)


def test_every_alternative_replaces_a_block():
    with open(README) as f:
        blocks = walkthrough_blocks(f.read())
    assert any(instead for _, _, instead, _ in blocks)
    plain = steps(blocks, False)[1]
    alt = steps(blocks, True)[1]
    assert len(plain) == len(alt)
    assert [b for b, _ in plain] != [b for b, _ in alt]


def test_the_matcher():
    assert matches("a…c\n", "abbbc\n") is None
    assert matches("a…c\n", "ab\nc\n") is not None
    assert matches("x\n…\nz\n", "x\n1\n2\nz\n") is None
    assert matches("x\n…\nz\n", "x\nz\n") is None
    assert matches("x\ny\n", "x\ny\nextra\n") is not None


if __name__ == "__main__":  # prints each block's output, to paste into the README
    import sys
    import tempfile
    d = tempfile.mkdtemp(prefix="basalt-readme-")
    for body, expected, got in run_walkthrough(d, "--alternatives" in sys.argv):
        print("=" * 20)
        print(body, end="")
        print("-" * 20)
        print(got, end="")
