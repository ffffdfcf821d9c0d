"""Bring-your-own-app settings in the bench file: env, cwd, setup, declared pools, placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolbench.config import placeholders
from poolbench.config.bench import load_config, select
from poolbench.config.variants import Engine
from poolbench.errors import PoolbenchError
from poolbench.options import Overrides
from poolbench.redact import MASK, add_secret, looks_secret, mask_text, mask_tree

COMMAND = 'command = ["python", "-m", "uvicorn", "svc:app", "--port", "{port}"]\n'


def _bench(tmp_path: Path, variant: str, experiment: str = "") -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(f"[variants.svc]\n{variant}\n[experiments.e]\nvariants = ['svc']\n{experiment}")
    return path


def test_a_service_variant_with_settings_setup_and_declared_pools(tmp_path: Path) -> None:
    (tmp_path / "service").mkdir()
    (tmp_path / "locustfile.py").write_text("")
    path = _bench(
        tmp_path,
        COMMAND
        + 'cwd = "service"\n'
        + 'setup = [["alembic", "upgrade", "head"], ["python", "initial_data.py"]]\n'
        + "setup_timeout_s = 60\nworkers = 4\n"
        + 'engines = [{name = "untagged", pool_size = 5, max_overflow = 10},'
        + ' {name = "svc:jobs", pool_size = 2}]\n'
        + '[variants.svc.env]\nPOSTGRES_PORT = "{db_port}"\nDEBUG = 1\n',
        '[experiments.e.load]\nlocustfile = "locustfile.py"\n',
    )
    config = load_config(path)
    svc = config.variants["svc"]
    assert svc.cwd == str(tmp_path / "service")  # beside the bench file
    assert svc.setup == (("alembic", "upgrade", "head"), ("python", "initial_data.py"))
    assert svc.setup_timeout_s == 60.0 and svc.workers == 4
    assert svc.engines == (Engine("untagged", 5, 10), Engine("svc:jobs", 2, 10))
    assert svc.env == {"POSTGRES_PORT": "{db_port}", "DEBUG": "1"}
    [experiment] = select(config)
    assert experiment.load.locustfile == str(tmp_path / "locustfile.py")


def test_pool_size_alone_declares_one_untagged_engine(tmp_path: Path) -> None:
    svc = load_config(_bench(tmp_path, COMMAND + "pool_size = 3\n")).variants["svc"]
    assert svc.engines == (Engine("untagged", 3, 10),)  # SQLAlchemy's default overflow


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (COMMAND + "pool_size = 5\nengines = [{name = 'x'}]\n", "declares both engines and"),
        (COMMAND + "engines = [{pool_size = 5}]\n", "variants.svc.engines[0].name must be"),
        (
            COMMAND + "engines = [{name = 'x', size = 5}]\n",
            "unknown key variants.svc.engines[0].size",
        ),
        (COMMAND + "workers = 0\n", "variants.svc.workers must be an integer >= 1, got 0"),
        (COMMAND + "max_overflow = -1\n", "variants.svc.max_overflow must be an integer >= 0"),
        (COMMAND + "setup = ['alembic upgrade head']\n", "variants.svc.setup[0] must be a list"),
        (COMMAND + "setup = [[]]\n", "variants.svc.setup holds an empty command"),
        (COMMAND + "setup_timeout_s = 0\n", "setup_timeout_s must be a positive number"),
        (
            COMMAND + "listen_beyond_loopback = 'yes'\n",
            "variants.svc.listen_beyond_loopback must be true or false, got 'yes'",
        ),
        (COMMAND + "[variants.svc.env]\nX = [1]\n", "variants.svc.env.X must be a string"),
        ('app_dir = "apps_before"\npool_size = 5\n', "declare pool_size/max_overflow/engines only"),
        ('app_dir = "apps_before"\ncwd = "x"\n', "variants.svc.cwd must be a directory"),
    ],
)
def test_bad_service_settings_are_one_line(tmp_path: Path, variant: str, message: str) -> None:
    with pytest.raises(PoolbenchError) as caught:
        load_config(_bench(tmp_path, variant))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            'SECRET_KEY = "${NOT_SET_ANYWHERE}"',
            "variants.svc.env.SECRET_KEY uses ${NOT_SET_ANYWHERE}, which is not set",
        ),
        (
            'URL = "{db_pasword}"',
            "variants.svc.env.URL uses unknown placeholder {db_pasword}: known are {database_url}",
        ),
    ],
)
def test_placeholders_are_checked_when_the_run_is_chosen(
    tmp_path: Path, env: str, message: str
) -> None:
    config = load_config(_bench(tmp_path, COMMAND + f"[variants.svc.env]\n{env}\n"))
    with pytest.raises(PoolbenchError) as caught:
        select(config)
    assert message in str(caught.value)


def test_expansion_is_one_pass_and_leaves_other_braces() -> None:
    values = {"db_password": "p{port}w", "port": "8000"}
    environ = {"TOKEN": "${TOKEN}", "HOME": "/home/u"}
    assert placeholders.expand("{db_password}:{port}", values, environ) == "p{port}w:8000"
    assert placeholders.expand("${TOKEN}${HOME}", values, environ) == "${TOKEN}/home/u"
    assert placeholders.expand('{"json": 1} {x}', values, environ) == '{"json": 1} {x}'


def test_bad_bindir_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = load_config(_bench(tmp_path, COMMAND))
    with pytest.raises(PoolbenchError, match=r"bindir .*nowhere has no executable initdb"):
        select(config, Overrides(pg_bindir=str(tmp_path / "nowhere")))


def test_registered_secrets_and_secret_names_are_masked() -> None:
    add_secret("hunter2-s3cret/+")
    add_secret("abc")  # too short to mask safely: ignored
    text = "key=hunter2-s3cret/+ url=hunter2-s3cret%2F%2B abc"
    assert mask_text(text) == f"key={MASK} url={MASK} abc"
    assert all(map(looks_secret, ["SECRET_KEY", "POSTGRES_PASSWORD", "API_TOKEN", "AWS_KEY"]))
    assert not any(map(looks_secret, ["POSTGRES_SERVER", "POSTGRES_PORT", "WORKERS"]))
    tree = mask_tree({"env": {"SECRET_KEY": "x", "PORT": "1"}, "cmd": "hunter2-s3cret/+"})
    assert tree == {"env": {"SECRET_KEY": MASK, "PORT": "1"}, "cmd": MASK}


def test_a_variant_extends_another(tmp_path: Path) -> None:
    """Same service, four workers: only what differs is written; env merges by key."""
    path = _bench(
        tmp_path,
        COMMAND
        + 'label = "one"\nworkers = 1\npool_size = 5\n'
        + '[variants.svc.env]\nA = "1"\nB = "2"\n'
        + '[variants.svc4]\nextends = "svc"\nworkers = 4\n[variants.svc4.env]\nB = "two"\n'
        + '[variants.svc4e]\nextends = "svc4"\nengines = [{name = "x", pool_size = 1}]\n',
    )
    variants = load_config(path).variants
    svc, svc4, svc4e = variants["svc"], variants["svc4"], variants["svc4e"]
    assert svc4.command == svc.command and svc4.workers == 4 and svc4.label is None
    assert svc4.env == {"A": "1", "B": "two"} and svc4.engines == svc.engines
    assert svc4e.workers == 4 and svc4e.engines == (Engine("x", 1, 10),)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[variants.b]\nextends = "nope"\n', "variants.b.extends names an unknown variant: 'nope'"),
        ('[variants.b]\nextends = "c"\n[variants.c]\nextends = "b"\n', "names a cycle"),
    ],
)
def test_bad_extends_is_one_line(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(PoolbenchError, match=message):
        load_config(_bench(tmp_path, COMMAND + extra))
