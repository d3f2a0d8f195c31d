"""How the command line sets up a CPU host: tcmalloc, and one XLA device per core.

Both must be in place before the process starts (a preload) or before JAX starts
(XLA_FLAGS), so `audio-interaction` re-executes itself once with them set.

**tcmalloc.**
XLA:CPU gives each execution of a compiled program its temporary buffer (366 MB for
the tiny train step) from `malloc`; glibc serves a block that large with a fresh
`mmap` and returns it with `munmap`, so every step page-faults its whole working set
in again (~90,000 faults per tiny train step). tcmalloc keeps the freed pages for the
next step: the same step runs 1.33-1.46x faster (`benchmarks/train_step.py --sections
host` measures both side by side). The library is Debian's
`libtcmalloc-minimal4` (installed by `install.sh`).

`AUDIO_INTERACTION_MALLOC=system` keeps glibc's malloc. Python sessions and
notebooks get it with ``LD_PRELOAD=$(python -m audio_interaction.apps.cpu_host) jupyter lab``.

**One device per core** (`train` only). XLA:CPU runs one device's program with
intra-op threads, which small ops use poorly; split over one simulated device per
core, the same global batch trains data-parallel with each core running its own
shard: the tiny step 1.07-1.3x faster again on 2 cores (same benchmark). The numbers are the single device's
(sharded == single-device is tested). Done only when it changes nothing else: the
config's mesh is the default (all devices on `data`), the micro-batch divides by
the core count, one process, XLA_FLAGS names no device count, and
`AUDIO_INTERACTION_CPU_DEVICES` (a count, 1 = off) does not say otherwise.
"""

from __future__ import annotations

import ctypes.util
import os
import pathlib
import sys

_DEVICES = "AUDIO_INTERACTION_CPU_DEVICES"
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_CHOICE = "AUDIO_INTERACTION_MALLOC"


def find_tcmalloc() -> str | None:
  """The tcmalloc shared library's name as the dynamic loader finds it
  ("libtcmalloc_minimal.so.4"; LD_PRELOAD takes it as it is), or None."""
  return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def preloaded(environ: dict[str, str] | os._Environ = os.environ) -> bool:
  """Whether `environ`'s LD_PRELOAD already loads a tcmalloc."""
  return "tcmalloc" in environ.get("LD_PRELOAD", "")


def environment_with_tcmalloc(environ: dict[str, str] | os._Environ = os.environ
                              ) -> dict[str, str] | None:
  """A copy of `environ` whose LD_PRELOAD starts with tcmalloc; None when there is
  nothing to change (asked for the system malloc, already preloaded -- which is also
  what keeps the re-executed process from re-executing again -- or no tcmalloc on
  this machine).

  Raises:
    ValueError: AUDIO_INTERACTION_MALLOC is neither "tcmalloc" nor "system".
  """
  choice = environ.get(_CHOICE, "tcmalloc")
  if choice not in ("tcmalloc", "system"):
    raise ValueError(f"{_CHOICE}={choice!r}: must be 'tcmalloc' or 'system'")
  if choice == "system" or preloaded(environ):
    return None
  library = find_tcmalloc()
  if library is None:
    return None
  env = dict(environ)
  env["LD_PRELOAD"] = ":".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
  return env


def active() -> str:
  """"tcmalloc" when this process has a tcmalloc mapped, else "system"."""
  try:
    maps = pathlib.Path("/proc/self/maps").read_text()
  except OSError:  # not Linux
    return "system"
  return "tcmalloc" if "libtcmalloc" in maps else "system"


def cpu_devices_for_training(micro_batch: int, mesh: dict[str, int],
                             environ: dict[str, str] | os._Environ = os.environ,
                             cores: int | None = None) -> int:
  """How many CPU devices `train` should run on: the cores this process may use
  (`cores`, default its CPU affinity; or AUDIO_INTERACTION_CPU_DEVICES) when the module docstring's conditions hold, else 1.

  Raises:
    ValueError: AUDIO_INTERACTION_CPU_DEVICES is not a positive integer.
  """
  wanted = environ.get(_DEVICES, "")
  if wanted and not (wanted.isdigit() and int(wanted) >= 1):
    raise ValueError(f"{_DEVICES}={wanted!r}: must be a device count >= 1 (1: one device)")
  count = int(wanted) if wanted else (cores or len(os.sched_getaffinity(0)))
  default_mesh = dict(mesh) == {"data": -1, "fsdp": 1, "tensor": 1}
  if (count <= 1 or not default_mesh or micro_batch % count
      or _DEVICE_FLAG in environ.get("XLA_FLAGS", "")):
    return 1
  return count


def environment_with_cpu_devices(count: int,
                                 environ: dict[str, str] | os._Environ = os.environ
                                 ) -> dict[str, str]:
  """A copy of `environ` whose XLA_FLAGS give the CPU platform `count` devices."""
  flags = " ".join(f for f in (environ.get("XLA_FLAGS", ""), f"{_DEVICE_FLAG}={count}") if f)
  return dict(environ, XLA_FLAGS=flags)


def reexec(env: dict[str, str]) -> None:
  """Replaces this process by `python -m audio_interaction <same arguments>` in `env`.
  Call it only from a program's entry point, never from a library function."""
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", "audio_interaction", *sys.argv[1:]], env)


def reexec_under_tcmalloc() -> None:
  """Replaces this process by `python -m audio_interaction <same arguments>` with
  tcmalloc preloaded; returns (doing nothing) when `environment_with_tcmalloc` has no
  change to make. Call it first thing in a program's entry point, never from a
  library function: the process is replaced."""
  env = environment_with_tcmalloc()
  if env is not None:
    reexec(env)


if __name__ == "__main__":
  library = find_tcmalloc()
  if library is None:
    sys.exit("no tcmalloc on this machine (Debian: apt-get install libtcmalloc-minimal4)")
  print(library)
