r"""Export formats of the embedded tiny model: file sizes, export and load times, step time.

Run::

  python benchmarks/export_formats.py            # 10 load repetitions, 50 chunks
  python benchmarks/export_formats.py --quick    # 3 repetitions, 10 chunks: a smoke test

For the embedded bundle (`export.portable.EMBEDDED_BUNDLE`) it writes, in a temporary
directory, the msgpack bundle, the safetensors bundle and the StableHLO export
(`export/stablehlo.py`, batch 1) lowered for cpu and for cpu,cuda,tpu, and prints:

* file sizes: params.msgpack vs model.safetensors, and the serialized functions;
* export time of each format (the process's first StableHLO export apart);
* load time (median over repetitions, the formats interleaved): `load_bundle` of
  each bundle, and `ExportedModel.load` (weights + deserializing the functions);
* time to the first P(SPEAK) (load, start a stream, compile, one chunk) through the
  engine and through the exported runner, with no persistent compilation cache;
* per-chunk time of the jitted `perceive`, engine vs exported, interleaved chunk for
  chunk over the same audio on one XLA thread.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(REPO))

# One XLA thread (see benchmarks/stream_step.py, ONE_THREAD_ENV), and compile times
# measured as compiles: no persistent cache. Set before jax loads.
for _name, _value in {"NPROC": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
                      "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}.items():
  os.environ.setdefault(_name, _value)
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

import flax.serialization  # noqa: E402
import jax  # noqa: E402  (after the thread settings)
import numpy as np  # noqa: E402

from audio_interaction import stream_format as sf  # noqa: E402
from audio_interaction.export import portable, stablehlo, stablehlo_runner, tensors  # noqa: E402
from audio_interaction.infer.engine import Engine  # noqa: E402
from audio_interaction.model.model import AudioInteractionModel  # noqa: E402


def _mb(path: pathlib.Path) -> float:
  files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
  return sum(p.stat().st_size for p in files) / 1e6


def _timed(fn):
  began = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - began


def _cpu() -> str:
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return "unknown"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  reps, chunks = (3, 10) if args.quick else (10, 50)
  print(f"Machine: {_cpu()}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}), "
        f"python {platform.python_version()}, jax {jax.__version__}, one XLA thread; "
        "the embedded tiny model", flush=True)
  config, params, tokenizer = portable.load_bundle(portable.EMBEDDED_BUNDLE)
  model = AudioInteractionModel(config)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    msgpack, t_msgpack = _timed(lambda: portable.save_bundle(tmp / "msgpack", params,
                                                             tokenizer, config))
    safe, t_safe = _timed(lambda: portable.save_bundle(tmp / "safetensors", params, tokenizer,
                                                       config, weights_format="safetensors"))
    # The process's first export pays jax's one-time lowering setup; timed apart.
    _, t_first = _timed(lambda: stablehlo.export_stablehlo(tmp / "hlo_first", model, params,
                                                           tokenizer, config))
    cpu, t_cpu = _timed(lambda: stablehlo.export_stablehlo(tmp / "hlo_cpu", model, params,
                                                           tokenizer, config))
    multi, t_multi = _timed(lambda: stablehlo.export_stablehlo(
        tmp / "hlo_multi", model, params, tokenizer, config, platforms=("cpu", "cuda", "tpu")))
    functions = lambda d: sum(_mb(p) for p in d.glob("*" + stablehlo_runner.FUNCTION_SUFFIX))

    print("\nFile sizes:")
    print(f"  params.msgpack       {_mb(msgpack / portable.PARAMS_FILE):7.2f} MB")
    print(f"  model.safetensors    {_mb(safe / portable.SAFETENSORS_FILE):7.2f} MB")
    print(f"  StableHLO functions  {functions(cpu):7.3f} MB (cpu), {functions(multi):.3f} MB "
          f"(cpu,cuda,tpu); manifest {_mb(cpu / stablehlo_runner.MANIFEST_FILE) * 1e3:.1f} kB")
    print("\nExport time:")
    print(f"  bundle (msgpack) {t_msgpack * 1e3:.0f} ms, bundle (safetensors) "
          f"{t_safe * 1e3:.0f} ms, StableHLO cpu {t_cpu:.1f} s, cpu,cuda,tpu {t_multi:.1f} s (the process's first "
          f"StableHLO export: {t_first:.1f} s)")

    loads = {
        "msgpack": lambda: portable.load_bundle(msgpack),
        "safetensors": lambda: portable.load_bundle(safe),
        "exported": lambda: stablehlo_runner.ExportedModel.load(cpu),
        # The params file alone (load_bundle also derives the expected shapes from the config).
        "msgpack file": lambda: flax.serialization.msgpack_restore(
            (msgpack / portable.PARAMS_FILE).read_bytes()),
        "safetensors file": lambda: tensors.read_tensors(safe / portable.SAFETENSORS_FILE),
    }
    times = {name: [] for name in loads}
    for _ in range(reps):  # interleaved, so a change in the machine's load hits all alike
      for name, load in loads.items():
        times[name].append(_timed(load)[1])
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\nLoad time (median of {reps}):")
    print(f"  load_bundle msgpack {ms['msgpack']:.0f} ms, safetensors {ms['safetensors']:.0f} ms "
          f"({ms['safetensors'] / ms['msgpack']:.2f}x); ExportedModel.load {ms['exported']:.0f} ms")
    print(f"  the params file alone: msgpack {ms['msgpack file']:.1f} ms, safetensors "
          f"{ms['safetensors file']:.1f} ms ({ms['safetensors file'] / ms['msgpack file']:.2f}x, "
          "CRC-32s checked)")

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.normal(size=(chunks, 1, model.config.chunk_samples))).astype(np.float32)
    instruction = tokenizer.encode("answer when asked")

    def engine_first():
      engine = Engine(model)
      state = engine.init_state(params, [instruction])
      state, probs = engine.perceive(params, state, audio[0])
      return engine, state, float(np.asarray(probs)[0, sf.Decision.SPEAK])

    def exported_first():
      exported = stablehlo_runner.ExportedModel.load(cpu)
      state = exported.start([instruction])
      state, probs = exported.perceive(state, audio[0])
      return exported, state, float(probs[0, sf.Decision.SPEAK])

    (exported, x_state, p_x), t_x = _timed(exported_first)
    (engine, e_state, p_e), t_e = _timed(engine_first)
    print("\nFirst P(SPEAK) (load + start + compile + one chunk):")
    print(f"  engine {t_e:.2f} s, exported {t_x:.2f} s ({t_x / t_e:.2f}x); "
          f"|P difference| {abs(p_x - p_e):.1e}")

    step_e, step_x = [], []
    for chunk in audio[1:]:
      began = time.perf_counter()
      e_state, probs = engine.perceive(params, e_state, chunk)
      jax.block_until_ready(probs)
      step_e.append(time.perf_counter() - began)
      began = time.perf_counter()
      x_state, probs = exported.perceive(x_state, chunk)  # returns numpy: already waited
      step_x.append(time.perf_counter() - began)
    e_ms, x_ms = statistics.median(step_e) * 1e3, statistics.median(step_x) * 1e3
    print(f"\nperceive per chunk (median of {len(step_e)}, interleaved): engine {e_ms:.2f} ms, "
          f"exported {x_ms:.2f} ms ({x_ms / e_ms:.2f}x)")


if __name__ == "__main__":
  main()
