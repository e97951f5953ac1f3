"""Settings: precedence flag > env > YAML file > default, errors naming the key (exit 2),
and the command line (`--help`, `version`, unknown commands)."""
import os
import re

import pytest

from conftest import ROOT, Server, ServerStartError, run_basalt


def settings_from_source():
    """Setting names from the S(...) table in src/base/config.c."""
    with open(os.path.join(ROOT, "src", "base", "config.c")) as f:
        return re.findall(r"^\s*S\((\w+),\s*T_", f.read(), flags=re.M)


def help_defaults(text):
    """{setting name: default} from `basalt --help`."""
    out = {}
    for m in re.finditer(r"^\s+--([\w-]+)\s+BASALT_\w+\s+.*\(default: ([^)]*)\)\s*$", text, re.M):
        out[m.group(1).replace("-", "_")] = m.group(2)
    return out


# ---- command line ----------------------------------------------------------------------------

def test_help_lists_every_setting(run_basalt):
    cp = run_basalt("--help")
    assert cp.returncode == 0
    assert "usage" in cp.stdout and "basalt serve" in cp.stdout
    names = settings_from_source()
    assert names
    listed = help_defaults(cp.stdout)
    assert set(listed) == set(names)
    for n in names:
        assert "BASALT_" + n.upper() in cp.stdout


def test_serve_help(run_basalt):
    cp = run_basalt("serve", "--help")
    assert cp.returncode == 0 and "--listen" in cp.stdout


def test_no_arguments_prints_usage_and_fails(run_basalt):
    cp = run_basalt()
    assert cp.returncode == 2
    assert "usage" in cp.stderr


def test_version(run_basalt):
    cp = run_basalt("version")
    assert cp.returncode == 0
    with open(os.path.join(ROOT, "VERSION")) as f:
        version = f.read().strip()
    assert cp.stdout.startswith("basalt " + version)
    assert run_basalt("--version").stdout == cp.stdout


def test_unknown_command(run_basalt):
    cp = run_basalt("frobnicate")
    assert cp.returncode == 2
    assert "frobnicate" in cp.stderr


# ---- errors name the key -----------------------------------------------------------------------

def serve_fails(tmp_path, *args, env=None):
    cp = run_basalt("serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data"), *args,
                    env=env)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "listening" not in cp.stdout
    return cp.stderr


@pytest.mark.parametrize("args,names", [
    (["--bogus-flag", "1"], ["bogus"]),
    (["--max-body-bytes", "lots"], ["max_body_bytes", "lots"]),
    (["--max-body-bytes=12XB"], ["max_body_bytes"]),
    (["--threads", "2.5"], ["threads"]),
    (["--threads", "100000"], ["threads"]),
    (["--max-json-depth", "1"], ["max_json_depth"]),
    (["--log-level", "loud"], ["log_level", "loud"]),
    (["--no-auth=maybe"], ["no_auth", "maybe"]),
    (["--rate-limit-rps", "nan"], ["rate_limit_rps"]),
    (["--rate-limit-rps", "-1"], ["rate_limit_rps"]),
    (["--unknown-features", "sometimes"], ["unknown_features"]),
    (["--idle-timeout-ms"], ["idle-timeout-ms"]),
    (["positional"], ["positional"]),
])
def test_bad_flag_exit_2_names_key(tmp_path, args, names):
    err = serve_fails(tmp_path, *args)
    for n in names:
        assert n in err, err
    assert not (tmp_path / "data").exists(), "settings must be checked before touching the data dir"


@pytest.mark.parametrize("var,value,names", [
    ("BASALT_THREADS", "abc", ["BASALT_THREADS", "abc"]),
    ("BASALT_MAX_HEADER_BYTES", "1", ["BASALT_MAX_HEADER_BYTES"]),
    ("BASALT_NO_AUTH", "perhaps", ["BASALT_NO_AUTH"]),
])
def test_bad_env_exit_2_names_key(tmp_path, var, value, names):
    err = serve_fails(tmp_path, env={var: value})
    for n in names:
        assert n in err, err


@pytest.mark.parametrize("yaml_text,names", [
    ("bogus_key: 1\n", ["bogus_key"]),
    ("max_body_bytes: huge\n", ["max_body_bytes", "huge"]),
    ("threads: [1, 2]\n", ["threads"]),
    ("threads:\n  nested: 1\n", ["threads"]),
    ("listen: 127.0.0.1:0\nlog_level: chatty\n", ["log_level", "chatty"]),
    ("max_json_depth: 2\n  bad indentation: [\n", ["config"]),
])
def test_bad_config_file_exit_2_names_key(tmp_path, yaml_text, names):
    cfg = tmp_path / "basalt.yaml"
    cfg.write_text(yaml_text)
    err = serve_fails(tmp_path, "--config", str(cfg))
    for n in names:
        assert n in err, err


def test_missing_config_file_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    err = serve_fails(tmp_path, "--config", missing)
    assert missing in err


# ---- precedence ------------------------------------------------------------------------------

def printed_data_dir(tmp_path, args=(), env=None, yaml_text=None):
    """Starts a server with the given settings and returns the data dir it reports
    (stdout line and /v1/info must agree)."""
    extra = list(args)
    if yaml_text is not None:
        cfg = tmp_path / "basalt.yaml"
        cfg.write_text(yaml_text)
        extra = ["--config", str(cfg)] + extra
    srv = Server(args=extra, env=env, workdir=str(tmp_path), data_flag=False)
    try:
        srv.start()
        info = srv.get("/v1/info").json()
        assert info["data_dir"] == srv.printed_data_dir
        assert srv.stop() == 0
        return srv.printed_data_dir
    finally:
        srv.kill9()


def test_precedence_flag_env_file_default(tmp_path):
    d_file, d_env, d_flag = (str(tmp_path / n) for n in ("from-file", "from-env", "from-flag"))
    default = help_defaults(run_basalt("--help").stdout)["data"]
    yaml_text = "data: %s\n" % d_file
    env = {"BASALT_DATA": d_env}
    # default (run in tmp_path so a relative default lands there)
    got = printed_data_dir(tmp_path)
    assert got == os.path.realpath(os.path.join(str(tmp_path), default))
    # file beats default
    assert printed_data_dir(tmp_path, yaml_text=yaml_text) == os.path.realpath(d_file)
    # env beats file
    assert printed_data_dir(tmp_path, env=env, yaml_text=yaml_text) == os.path.realpath(d_env)
    # flag beats env and file
    assert printed_data_dir(tmp_path, args=["--data", d_flag], env=env,
                            yaml_text=yaml_text) == os.path.realpath(d_flag)
    # --flag=value form too
    d_flag2 = d_flag + "-eq"
    assert printed_data_dir(tmp_path, args=["--data=" + d_flag2], env=env,
                            yaml_text=yaml_text) == os.path.realpath(d_flag2)


def test_config_file_from_env(tmp_path):
    d_file = str(tmp_path / "via-env-config")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: %s\n" % d_file)
    assert printed_data_dir(tmp_path, env={"BASALT_CONFIG": str(cfg)}) == os.path.realpath(d_file)


def test_flag_setting_takes_effect(start_server):
    """A size setting given with a unit suffix is applied (checked through behaviour)."""
    s = start_server("--threads", "1", "--max-body-bytes", "1KiB")
    ok = s.post("/v1/keys", json={"name": "a" * 100, "role": "viewer"})
    assert ok.status_code == 201
    big = s.post("/v1/keys", data=b"x" * 1025, headers={"Content-Type": "application/json"})
    assert big.status_code == 413


def test_env_setting_takes_effect(start_server):
    s = start_server("--threads", "1", env={"BASALT_MAX_JSON_DEPTH": "3"})
    r = s.post("/v1/keys", data='{"a":[[[]]]}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"


def test_no_auth_mode(start_server):
    s = start_server("--threads", "1", "--no-auth")
    r = s.get("/v1/info", key=None)
    assert r.status_code == 200
    assert r.json()["auth"] is False
    assert r.json()["caller"]["role"] == "admin"
