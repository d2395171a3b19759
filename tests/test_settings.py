"""pympec.settings: every PYMPEC_* variable declared once, read at use, checked with a clear
error; docs/settings.md generated from it (DESIGN contract 8)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pympec
from pympec import paths, settings
from pympec.cluster import local
from pympec.errors import ClusterError, ProtocolError
from pympec.protocol import buffers, wire
from pympec.protocol.backoff import Backoff
from pympec.settings import SETTINGS, Setting, SettingError

from test_wire import KEY, encoded, feed

ROOT = Path(__file__).resolve().parent.parent
BAD = {"bytes": ["lots", "-1", "1.5G", "2X", "G"],
       "seconds": ["soon", "-1", "inf", "nan", "1s"],
       "seconds, or fields": ["fast", "-1", "max=", "sleepy=3"],
       "seconds, listed": ["soon", "-1", "600,x", ",", "600,inf"],
       "count": ["many", "1.5", "-1"],
       "flag": ["maybe", "2", "y"]}


def by_kind(kind: str) -> list[Setting]:
    return [s for s in SETTINGS if s.kind.name == kind]


@pytest.fixture(autouse=True)
def unset(monkeypatch):
    """Each test starts with every setting unset but PYMPEC_DIR (the suite's own)."""
    for s in SETTINGS:
        if s is not settings.DIR:
            monkeypatch.delenv(s.name, raising=False)


def test_doc_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_settings.py"), "--stdout"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "docs" / "settings.md").read_text(), (
        "docs/settings.md is out of date with pympec/settings.py: run "
        "`python docs/make_settings.py`")


def test_every_setting_is_in_the_registry_once():
    declared = [v for v in vars(settings).values() if isinstance(v, Setting)]
    assert sorted(s.name for s in declared) == sorted(s.name for s in SETTINGS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert all(s.name.startswith("PYMPEC_") and s.doc for s in SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_parses_its_default(setting, monkeypatch):
    monkeypatch.delenv(setting.name, raising=False)
    assert setting.get() == setting.default
    monkeypatch.setenv(setting.name, "  ")                # blank means unset
    assert setting.get() == setting.default
    if setting.default is not None:                       # as the table would write it
        monkeypatch.setenv(setting.name, setting.kind.show(setting.default))
        assert setting.get() == setting.default


@pytest.mark.parametrize("text,value", [("0", 0), ("512", 512), (" 2G ", 2 << 30),
                                        ("1k", 1024), ("3M", 3 << 20), ("1T", 1 << 40)])
def test_byte_counts(text, value, monkeypatch):
    monkeypatch.setenv("PYMPEC_RESULT_CAP", text)
    assert settings.RESULT_CAP.get() == value


@pytest.mark.parametrize("setting,bad", [(s, bad) for kind, bads in BAD.items()
                                         for s in by_kind(kind) for bad in bads],
                         ids=lambda v: v.name if isinstance(v, Setting) else v)
def test_bad_values_raise_naming_variable_and_value(setting, bad, monkeypatch):
    monkeypatch.setenv(setting.name, bad)
    with pytest.raises(SettingError) as info:
        setting.get()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"{setting.name}={bad!r}: expected ")
    with pytest.raises(SettingError):                     # an error is not remembered
        setting.get()
    monkeypatch.delenv(setting.name)
    assert setting.get() == setting.default


def test_error_says_what_is_expected(monkeypatch):
    monkeypatch.setenv("PYMPEC_RESULT_CAP", "lots")
    with pytest.raises(SettingError, match=r"^PYMPEC_RESULT_CAP='lots': expected a byte count "
                                           r"such as 2147483648 or 2G, >= 0$"):
        settings.RESULT_CAP.get()


def test_check_names_the_first_bad_setting(monkeypatch):
    settings.check()
    monkeypatch.setenv("PYMPEC_BUFFER_KEEP", "soon")
    with pytest.raises(SettingError, match="PYMPEC_BUFFER_KEEP='soon'"):
        settings.check()


def test_a_changed_value_is_seen_at_once(monkeypatch):
    for text, value in [("1K", 1024), ("2K", 2048), ("1K", 1024)]:
        monkeypatch.setenv("PYMPEC_MAX_MESSAGE", text)
        assert settings.MAX_MESSAGE.get() == value


# -- the code sees a monkeypatched value without a reimport -------------------------

def test_pympec_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PYMPEC_DIR", str(tmp_path / "a"))
    assert paths.base_dir() == tmp_path / "a"
    monkeypatch.setenv("PYMPEC_DIR", str(tmp_path / "b"))
    assert paths.log_dir() == tmp_path / "b" / "log"


def test_mpiexec(monkeypatch):
    monkeypatch.setenv("PYMPEC_MPIEXEC", "/bin/true")
    assert local.find_mpiexec() == "/bin/true"


def test_max_message(monkeypatch):
    data = encoded(wire.MessageWriter(KEY), {"verb": "x"}, [b"\0" * 4096])
    monkeypatch.setenv("PYMPEC_MAX_MESSAGE", "1K")
    with pytest.raises(ProtocolError, match="over the limit of 1024 .PYMPEC_MAX_MESSAGE"):
        feed(wire.MessageReader(KEY), data)
    monkeypatch.setenv("PYMPEC_MAX_MESSAGE", "4K")
    [message] = feed(wire.MessageReader(KEY), data)
    assert message.header["verb"] == "x"


def test_buffer_pool(monkeypatch):
    pool = buffers.BufferPool()
    monkeypatch.setenv("PYMPEC_BUFFER_KEEP", "7")
    monkeypatch.setenv("PYMPEC_BUFFER_CAP", "0")          # turns the pool off
    assert pool.keep == 7.0 and pool.cap == 0
    pool.allocate(4 * buffers.POOL_FROM)
    assert pool.entries == []
    monkeypatch.setenv("PYMPEC_BUFFER_CAP", "64M")
    pool.allocate(4 * buffers.POOL_FROM)
    assert len(pool.entries) == 1
    assert buffers.BufferPool(keep=1.0, cap=0).cap == 0   # given values win over settings
    if buffers.refcounts_tell():
        assert buffers.POOL.cap == 64 << 20
    else:                                                 # off where counts cannot tell
        assert buffers.POOL.cap == 0


def test_backoff(monkeypatch):
    monkeypatch.setenv("PYMPEC_BACKOFF", "max=0.004,idle=5")
    b = Backoff.from_env(max=0.05, spin=1e-3)
    assert (b.max, b.idle, b.spin) == (0.004, 5.0, 1e-3)
    monkeypatch.setenv("PYMPEC_BACKOFF", "0.002")
    assert Backoff.from_env(max=0.05).max == 0.002


# -- bad values never break an import --------------------------------------------------

def test_imports_succeed_with_bad_values_and_use_raises(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update({s.name: BAD[s.kind.name][0] for s in SETTINGS if s.kind.name in BAD})
    code = """if True:
        import importlib, json, pkgutil
        import pympec, pympec.client, pympec.controller.server
        names = [m.name for m in pkgutil.walk_packages(pympec.__path__, "pympec.")
                 if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        from pympec import settings
        failed = []
        for s in settings.SETTINGS:
            try:
                s.get()
            except settings.SettingError as e:
                failed.append(str(e))
        print(json.dumps([len(names), failed]))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported, failed = json.loads(proc.stdout.splitlines()[-1])
    assert imported > 20
    assert len(failed) == len([s for s in SETTINGS if s.kind.name in BAD])
    assert any(e.startswith("PYMPEC_RESULT_CAP='lots'") for e in failed)


def test_a_cluster_with_a_bad_value_stops_at_startup_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMPEC_DIR", str(tmp_path / "pympec"))
    env = dict(os.environ, PYMPEC_RESULT_CAP="lots")
    cluster = pympec.Cluster(n=1, connection_file=tmp_path / "cluster.json", timeout=60, env=env)
    with pytest.raises(ClusterError, match="PYMPEC_RESULT_CAP='lots': expected"):
        cluster.start()
