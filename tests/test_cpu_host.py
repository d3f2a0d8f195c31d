"""The command line's CPU host set-up: tcmalloc and one XLA device per core (apps/cpu_host.py)."""

import os
import subprocess
import sys

import pytest

from audio_interaction.apps import cli, cpu_host

needs_tcmalloc = pytest.mark.skipif(cpu_host.find_tcmalloc() is None,
                                    reason="no tcmalloc on this machine (install.sh installs it)")


@needs_tcmalloc
def test_environment_preloads_tcmalloc_before_existing_preloads():
  env = cpu_host.environment_with_tcmalloc({"LD_PRELOAD": "/x/libother.so", "HOME": "/h"})
  first, rest = env["LD_PRELOAD"].split(":", 1)
  assert "tcmalloc" in first and rest == "/x/libother.so"
  assert env["HOME"] == "/h"
  # The re-executed process (tcmalloc now in LD_PRELOAD) changes nothing more: no exec loop.
  assert cpu_host.environment_with_tcmalloc(env) is None


def test_environment_left_alone_when_asked_or_done_or_missing(monkeypatch):
  assert cpu_host.environment_with_tcmalloc({"AUDIO_INTERACTION_MALLOC": "system"}) is None
  assert cpu_host.environment_with_tcmalloc({"LD_PRELOAD": "/lib/libtcmalloc.so.4"}) is None
  monkeypatch.setattr(cpu_host, "find_tcmalloc", lambda: None)
  assert cpu_host.environment_with_tcmalloc({}) is None


def test_unknown_choice_is_an_error_naming_the_variable(capsys, monkeypatch):
  with pytest.raises(ValueError, match="AUDIO_INTERACTION_MALLOC='jemalloc'"):
    cpu_host.environment_with_tcmalloc({"AUDIO_INTERACTION_MALLOC": "jemalloc"})
  monkeypatch.setenv("AUDIO_INTERACTION_MALLOC", "jemalloc")
  monkeypatch.setattr(sys, "argv", ["audio-interaction", "demo"])
  assert cli.main() == 2
  assert "AUDIO_INTERACTION_MALLOC" in capsys.readouterr().err


@needs_tcmalloc
def test_the_environment_really_loads_tcmalloc():
  probe = [sys.executable, "-c", "from audio_interaction.apps import cpu_host; "
           "print(cpu_host.active())"]
  clean = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD"}
  run = lambda env: subprocess.run(probe, env=env, capture_output=True, text=True,
                                   check=True).stdout.strip()
  assert run(clean) == "system"
  assert run(cpu_host.environment_with_tcmalloc(clean)) == "tcmalloc"


@needs_tcmalloc
def test_the_program_reexecutes_itself_but_a_python_caller_is_never_replaced(monkeypatch):
  calls = []
  monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
  for name in ("LD_PRELOAD", "AUDIO_INTERACTION_MALLOC"):
    monkeypatch.delenv(name, raising=False)
  assert cli.main(["--help"]) == 0  # called from Python: no exec
  assert calls == []
  monkeypatch.setattr(sys, "argv", ["audio-interaction", "--help"])
  cli.main()  # run as a program
  (executable, args, env), = calls
  assert args == [sys.executable, "-m", "audio_interaction", "--help"]
  assert "tcmalloc" in env["LD_PRELOAD"]


DEFAULT_MESH = {"data": -1, "fsdp": 1, "tensor": 1}


def test_training_takes_one_device_per_core_only_when_nothing_else_changes():
  assert cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, {}, cores=2) == 2
  # The micro-batch must split evenly; another mesh or an explicit device count is the user's.
  assert cpu_host.cpu_devices_for_training(3, DEFAULT_MESH, {}, cores=2) == 1
  assert cpu_host.cpu_devices_for_training(4, {"data": 1, "fsdp": -1, "tensor": 1}, {},
                                           cores=2) == 1
  flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, flags, cores=2) == 1
  assert cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, {}, cores=1) == 1
  # AUDIO_INTERACTION_CPU_DEVICES: 1 turns it off, a count overrides the cores.
  off = {"AUDIO_INTERACTION_CPU_DEVICES": "1"}
  assert cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, off, cores=2) == 1
  four = {"AUDIO_INTERACTION_CPU_DEVICES": "4"}
  assert cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, four, cores=2) == 4
  with pytest.raises(ValueError, match="AUDIO_INTERACTION_CPU_DEVICES='two'"):
    cpu_host.cpu_devices_for_training(4, DEFAULT_MESH, {"AUDIO_INTERACTION_CPU_DEVICES": "two"})


def test_device_environment_keeps_other_xla_flags_and_jax_sees_the_devices():
  env = cpu_host.environment_with_cpu_devices(3, {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
  assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=3"
  clean = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  count = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                         env=cpu_host.environment_with_cpu_devices(3, clean),
                         capture_output=True, text=True, check=True).stdout.strip()
  assert count == "3"


def test_train_verb_reexecutes_on_every_core_of_a_cpu_host(monkeypatch, capsys):
  from audio_interaction import config_lib
  calls = []
  monkeypatch.setattr(cpu_host, "reexec", calls.append)
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
  for name in ("XLA_FLAGS", "AUDIO_INTERACTION_CPU_DEVICES"):
    monkeypatch.delenv(name, raising=False)
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"))
  cli._train_on_every_core(config)  # batch 4, default mesh, this 1-device process
  env, = calls
  assert env["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=2")
  assert "one XLA device per core (2)" in capsys.readouterr().err
  calls.clear()
  odd = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"),
                               ["data.batch_size=3"])
  cli._train_on_every_core(odd)
  assert calls == []
