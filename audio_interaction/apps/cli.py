"""`audio-interaction <verb>`: the one entry point. Thin: every verb calls a library function.

Verbs:
  build-data  generate a split of the streaming corpus (28 sub-tasks) as ArrayRecord,
              here (--workers) or on Apache Beam (--runner direct|dataflow|flink|...).
  dataset-card  abilities, sub-tasks, hours of audio, voices and sounds of a built split.
  show-example  one corpus example as a timeline PNG (labels per chunk), a WAV and text.
  train       train a config in a workdir (resumes from its newest good checkpoint).
  distill-encoder  teach the chunk-causal encoder the features of the same pretrained
              encoder over whole windows (unlabelled audio; resumable).
  heldout     run a model alone over held-out streams: when it spoke, what it said.
  eval        the benchmark suites B1-B8 (model, silence-timer baseline, PocketSphinx),
              on held-out streams, a manifest or a TFDS set: JSON + Markdown report.
  tune        choose the operating point (model threshold, hybrid model + VAD, gated
              timer, or silence timer) on dev-set manifests; optionally store it in the bundle.
  name-sound  what sound the sound-event head hears in audio files (its likeliest classes).
  ask         a question about each audio file, answered by the decoder ("What sound is this?").
  proactive-bench  the Proactive-Sound-Bench layout: RESPOND/IGNORE per clip, accuracy.
  export      write a workdir's (or a bundle's) model as a bundle, as safetensors, or as
              serialized StableHLO streaming steps that run without the model code.
  demo      the main job: the model listens to a generated example stream, decides
            chunk by chunk, replies; prints a live view, writes a timeline PNG + JSONL.
  inspect   parameter counts and AOT lowering of a config (works for pod configs).
  listen    the model listens to a file, the microphone or raw PCM on stdin, live:
            decides when to speak, replies; writes events.jsonl and timeline.png.
  serve     many live streams over websockets, and a page for the browser.
  build-real-dev  the real-audio DEV set (Debian packages held out from training).
  fetch-train-audio  the TRAIN packages' real sounds and beds for corpus randomisation.
  label-train-speech  Whisper's transcripts of the TRAIN packages' English voices.
"""

from __future__ import annotations

import argparse
import pathlib
import math
import shlex
import sys

from audio_interaction import config_lib
from audio_interaction.apps import cpu_host

DEFAULT_CONFIG = str(config_lib.experiments_dir() / "tiny.py")
BUNDLE_HELP = ("a model bundle directory, or a shipped model by name: 'embedded' (the tiny "
               "model, the default) or 'real-audio'")
# The fields of `config.infer` a `--config.infer.NAME=value` may set on demo and listen.
INFER_PREFIX = "--config.infer."


class UsageError(Exception):
  """A bad command line or config: reported by `main` as one line, exit code 2."""


def _config_from(args: argparse.Namespace, overrides: list[str]):
  try:
    return config_lib.load_config(args.config, overrides)
  except (ValueError, KeyError, TypeError) as error:
    raise UsageError(_one_line(error)) from error


def _infer_config(verb: str, bundle, overrides: list[str]):
  """The bundle's `config.infer` with the command line's `--config.infer.*` applied and
  checked.

  A bundle brings its own model config, so on demo, listen and eval (of a bundle) only
  the inference settings can be overridden; any other field is refused rather than
  ignored.
  """
  from audio_interaction.export.portable import bundle_config
  refused = [o for o in overrides if not o.startswith(INFER_PREFIX)]
  if refused:
    raise UsageError(
        f"{refused[0].split('=')[0]}: {verb} runs a model bundle, which brings its own "
        f"config; only its inference settings can be overridden "
        f"({INFER_PREFIX}NAME=value with NAME one of "
        f"{', '.join(sorted(config_lib.base_config().infer.keys()))})")
  try:
    # Checked whole, against the bundle's own model: a range ("sound_watch_chunks=0")
    # and a relation (a name bias on a model with no sound-event head) alike.
    config = bundle_config(bundle)
    config_lib.apply_overrides(config, overrides)
    config_lib.validate(config)
  except (ValueError, KeyError, TypeError) as error:
    raise UsageError(_one_line(error)) from error
  return config.infer


def _demo(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import demo
  infer = _infer_config("demo", args.bundle, overrides)
  # The embedded bundle brings its own config; --config matters only without one.
  config = _config_from(args, [])
  demo.run_demo(config, out_dir=args.out,
                threshold=infer.threshold if args.threshold is None else args.threshold,
                seed=args.seed, subtask=args.subtask, bundle=args.bundle, infer=infer)
  return 0


def _listen(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.infer import sources
  # Everything the user gave is checked before the model loads (seconds of JAX set-up).
  if args.mic:
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    source = sources.MicSource(device)
  elif args.stdin:
    # Piped from a live recorder unless said otherwise: `--speed inf` = a file, never drop.
    source = sources.StdinSource(args.format, sample_rate=args.rate,
                                 paced=args.speed != float("inf"))
  else:
    source = sources.FileSource(args.path, speed=args.speed)  # opens and checks the file
  infer = _infer_config("listen", args.checkpoint, overrides)
  from audio_interaction.apps import listen as listen_app
  from audio_interaction.infer import live
  listen_app.listen(source, bundle=args.checkpoint,
                    instruction=args.instruction or live.DEFAULT_INSTRUCTION,
                    threshold=infer.threshold if args.threshold is None else args.threshold,
                    out_dir=args.out, speak=args.speak, stall_timeout=args.stall_timeout,
                    every_chunk=args.every_chunk, infer=infer)
  return 0


def _build_data(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.corpus import build as corpus
  from audio_interaction.data import beam_storage
  config = _config_from(args, overrides)
  flags = beam_storage.option_flags(args.beam_option, args.pipeline_options)
  if args.runner == "local" and flags:
    raise UsageError("--beam-option/--pipeline-options are for a Beam --runner "
                     f"({'|'.join(beam_storage.RUNNERS)}), not local")
  if args.runner != "local" and args.workers != 1:
    raise UsageError("--workers is for --runner local; give a Beam runner its workers with "
                     "--beam-option (e.g. num_workers=8, direct_num_workers=2)")
  try:
    summary = corpus.build_corpus_split(
        config, args.split, args.num_examples, num_workers=args.workers,
        subtasks=args.subtasks.split(",") if args.subtasks else None,
        runner=args.runner, beam_options=flags)
  except ImportError as error:  # the [beam] extra is missing: the message says what to do
    raise UsageError(_one_line(error)) from error
  print(f"{args.split}: {summary}")
  return 0


def _dataset_card(args: argparse.Namespace, overrides: list[str]) -> int:
  import dataclasses
  import json
  from audio_interaction.data import dataset_card
  config = _config_from(args, overrides) if (args.rows or not args.dir) else None
  directory = args.dir or config.data.dir
  card = dataset_card.dataset_card(directory, args.split)
  print(card.markdown())
  payload = card.to_json()
  if args.rows:
    from audio_interaction.data import pipeline, row_coverage, storage
    settings = pipeline.PipelineConfig.from_config(config)
    coverage = row_coverage.row_coverage(
        storage.load_split(directory, args.split),
        storage.read_split_metadata(directory, args.split).abilities, settings)
    print("\n" + row_coverage.markdown(coverage, settings, config.audio.chunk_ms))
    payload["rows"] = {name: dataclasses.asdict(c) for name, c in coverage.items()}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
  return 0


def _compare_runs(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.viz import figures, training_curves
  del overrides
  names = args.name or [pathlib.Path(w).name for w in args.workdirs]
  if len(names) != len(args.workdirs):
    raise UsageError(f"--name is given {len(names)} times for {len(args.workdirs)} workdirs")
  if len(set(names)) != len(names):
    raise UsageError(f"two runs share a name ({', '.join(names)}): give each a --name")
  histories = {}
  for name, workdir in zip(names, args.workdirs):
    history = pathlib.Path(workdir) / "tensorboard" / "history.jsonl"
    if not history.is_file():
      raise UsageError(f"{workdir}: no tensorboard/history.jsonl (the loop writes it when a "
                       f"run ends; is this a train --workdir?)")
    histories[name] = training_curves.read_history(history)
  print(training_curves.held_out_table(histories, args.step))
  figure = training_curves.comparison_figure(histories, args.title)
  out = figures.save_figure(figure, args.out)
  print(f"wrote {out}")
  return 0


def _show_example(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.viz import example as show
  config = _config_from(args, overrides)
  shown = show.show_example(config, args.split, args.index, args.out,
                            subtask=args.subtask or None, seed=args.seed,
                            subtasks=args.subtasks.split(",") if args.subtasks else None,
                            play=args.play)
  print(shown.txt.read_text().splitlines()[0])
  print(f"wrote {shown.png}, {shown.wav}, {shown.txt}")
  if shown.played:
    print(shown.played)
  return 0


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  import logging
  from audio_interaction.train import loop
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  config = _config_from(args, overrides)
  _train_on_every_core(config)
  result = loop.train(config, args.workdir)
  print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
  return 0


def _distill_encoder(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  import logging
  from audio_interaction.train import distill
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  config = _config_from(args, overrides)
  try:
    result = distill.distill_encoder(config, args.workdir)
  except distill.NoDistillAudio as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(result, indent=1))
  print(f"use it with --config.init.encoder_checkpoint={result['encoder_dir']}")
  return 0


def _train_on_every_core(config) -> None:
  """Re-executes `train` with one XLA device per core when it runs on a CPU host
  (`cpu_host.cpu_devices_for_training`); returns when it stays as it is."""
  import jax
  if jax.default_backend() != "cpu" or jax.process_count() > 1 or jax.device_count() > 1:
    return
  count = cpu_host.cpu_devices_for_training(
      config.data.batch_size // config.train.grad_accum_steps, dict(config.sharding.mesh))
  if count > 1:
    print(f"train: one XLA device per core ({count}), data-parallel over the same global "
          f"batch ({cpu_host.__name__}; AUDIO_INTERACTION_CPU_DEVICES=1 turns it off)",
          file=sys.stderr)
    cpu_host.reexec(cpu_host.environment_with_cpu_devices(count))


def _heldout(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.eval import heldout
  from audio_interaction.corpus.build import heldout_sources
  from audio_interaction.export.portable import bundle_infer_config, load_model
  from audio_interaction.infer.engine import Engine
  from audio_interaction.infer.policies import policy_from_config
  model, params, tokenizer, note = load_model(_config_from(args, overrides), args.bundle)
  infer = bundle_infer_config(args.bundle)
  policy = policy_from_config(infer, chunk_seconds=model.config.chunk_seconds,
                              threshold=args.threshold)
  speech, sounds = heldout_sources()
  result = heldout.evaluate_heldout(Engine.from_infer(model, infer, tokenizer), params,
                                    tokenizer, speech, sounds,
                                    policy=policy, streams_per_subtask=args.streams,
                                    max_reply_tokens=infer.max_reply_tokens)
  print(f"model: {note}; {args.streams} held-out streams per online sub-task, "
        f"policy {infer.policy}, threshold "
        f"{infer.threshold if args.threshold is None else args.threshold}")
  print(heldout.format_table(result))
  if args.json:
    with open(args.json, "w") as file:
      json.dump({k: v for k, v in result.items() if k != "streams"}, file, indent=1)
  return 0


def _eval(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import eval_run
  from audio_interaction.eval import report, suites
  from audio_interaction.export.portable import bundle_config
  # The operating point: a workdir's training config (overrides applied), or a bundle's
  # own `infer` with the command line's `--config.infer.*` over it (a bundle brings its
  # own config: any other override is refused, not ignored); then the flags.
  is_workdir = args.checkpoint and (pathlib.Path(args.checkpoint) / "checkpoints").is_dir()
  config = _config_from(args, overrides) if is_workdir else None
  saved = config if is_workdir else bundle_config(args.checkpoint)
  infer = saved.infer if is_workdir else _infer_config("eval", args.checkpoint, overrides)
  for flag, seconds in (("--silence", args.silence), ("--baseline-silence", args.baseline_silence)):
    if seconds is not None and not seconds > 0:
      raise UsageError(f"{flag} {seconds}: must be > 0 (seconds of silence)")
  chosen = {name: value for name, value in (("threshold", args.threshold), ("vad", args.vad),
                                            ("silence_seconds", args.silence),
                                            ("baseline_silence_seconds", args.baseline_silence),
                                            ("policy", args.policy),
                                            ("min_silence_seconds", args.min_silence),
                                            ("sound_alert_threshold", args.sound_alert),
                                            ("sound_watch_threshold", args.sound_watch),
                                            ("word_watch", args.word_watch),
                                            ("sound_alert_once_per_sound",
                                             args.sound_alert_once_per_sound or None),
                                            ("sound_name_bias", args.sound_name_bias),
                                            ("sound_name_gate", args.sound_name_gate),
                                            ("sound_name_once", args.sound_name_once or None),
                                            ("sound_name_whole", args.sound_name_whole),
                                            ("seed", args.seed))
            if value is not None}
  if args.sound_name_bias is not None and not args.sound_name_bias >= 0:
    raise UsageError(f"--sound-name-bias {args.sound_name_bias}: must be >= 0 (nats)")
  eval_config = suites.EvalConfig.from_infer(
      infer, sweep_thresholds=tuple(float(t) for t in args.sweep.split(",") if t.strip()),
      min_turns=args.min_turns, min_alert_events=args.min_alert_events,
      bootstrap_resamples=args.resamples, ctc_lm=args.ctc_lm, ctc_lm_weight=args.ctc_lm_weight,
      ctc_lm_word_score=args.ctc_lm_word_score,
      ctc_lm_spelling=saved.data.get("ctc_targets", "tokens"), **chosen)
  defaults = build_parser().parse_args(["eval"])
  extra = tuple(token for name, flag in (
      ("threshold", "--threshold"), ("vad", "--vad"), ("silence", "--silence"),
      ("baseline_silence", "--baseline-silence"),
      ("policy", "--policy"), ("min_silence", "--min-silence"), ("sound_alert", "--sound-alert"),
      ("sound_watch", "--sound-watch"),
      ("sound_name_bias", "--sound-name-bias"), ("sound_name_gate", "--sound-name-gate"),
      ("seed", "--seed"), ("sweep", "--sweep"), ("min_turns", "--min-turns"),
      ("min_alert_events", "--min-alert-events"), ("resamples", "--resamples"),
      ("ctc_lm_weight", "--ctc-lm-weight"), ("ctc_lm_word_score", "--ctc-lm-word-score"))
      if getattr(args, name) != getattr(defaults, name)
      for token in (flag, str(getattr(args, name)))) + (
          ("--sound-alert-once-per-sound",) if args.sound_alert_once_per_sound else ()
      ) + (
          ("--sound-name-once",) if args.sound_name_once else ()
      ) + (
          () if args.word_watch is None else
          ("--word-watch" if args.word_watch else "--no-word-watch",)
      ) + (
          () if args.sound_name_whole is None else
          ("--sound-name-whole" if args.sound_name_whole else "--no-sound-name-whole",)
      ) + (("--ctc-lm",) if args.ctc_lm else ()) + tuple(overrides)
  command = eval_run.eval_command(
      suites=args.suites, manifest=args.manifest, tfds=args.tfds, classes=args.classes,
      streams=args.streams, checkpoint=args.checkpoint, out_dir=args.out, extra=extra)
  done = eval_run.run_eval(checkpoint=args.checkpoint, suites=args.suites, manifest=args.manifest,
                           streams=args.streams, out_dir=args.out, config=config,
                           eval_config=eval_config, command=command, overwrite=args.overwrite,
                           tfds=args.tfds, classes=args.classes)
  print("\n".join(report.case_count_lines(done["results"])))
  print(report.summary_table(done["results"]))
  timing = done["results"]["timing"]
  print(f"{timing['cases']} cases in {done['seconds']:.0f} s; report: {done['paths']['markdown']}; "
        f"per case: {done['paths']['cases']}")
  print(f"Reproduce: {command}")
  return 0


def _number_list(text: str) -> tuple[float, ...]:
  """"0.2,0.4" -> (0.2, 0.4): a comma list of numbers, at least one."""
  values = tuple(_number(t) for t in text.split(",") if t.strip())
  if not values:
    raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}")
  return values


# `tune`'s grid flags, named as `eval.tune.Grid`'s fields (None: the Grid's default).
GRID_FLAGS = ("thresholds", "hybrid_thresholds", "min_silences", "hybrid_silences",
              "gated_thresholds", "gated_silences", "timer_silences", "sound_alert_thresholds",
              "sound_alert_holds", "sound_alert_chunks", "sound_alert_once_per_sound")


def _tune(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import tune_run
  from audio_interaction.eval import tune
  _refuse_config("tune", overrides, " (the bundle brings its own; the grid is set by the flags)")
  grid = tune.Grid(**{name: getattr(args, name) for name in GRID_FLAGS
                      if getattr(args, name) is not None})
  for name, values in (("--thresholds", grid.thresholds),
                       ("--hybrid-thresholds", grid.hybrid_thresholds),
                       ("--gated-thresholds", grid.gated_thresholds),
                       ("--sound-alert-thresholds", grid.sound_alert_thresholds)):
    if not all(0 <= v <= 1 for v in values):
      raise UsageError(f"{name} must be in [0, 1], got {values}")
  for name, values in (("--min-silences", grid.min_silences),
                       ("--hybrid-silences", grid.hybrid_silences),
                       ("--gated-silences", grid.gated_silences),
                       ("--timer-silences", grid.timer_silences),
                       ("--sound-alert-holds", grid.sound_alert_holds)):
    if not all(v >= 0 for v in values) or (name != "--min-silences" and 0 in values):
      raise UsageError(f"{name} must be > 0 (>= 0 for --min-silences), got {values}")
  if not all(v >= 1 and float(v).is_integer() for v in grid.sound_alert_chunks):
    raise UsageError(f"--sound-alert-chunks must be whole numbers >= 1, got "
                     f"{grid.sound_alert_chunks}")
  if not all(v in (0, 1) for v in grid.sound_alert_once_per_sound):
    raise UsageError(f"--sound-alert-once-per-sound takes 0 and/or 1, got "
                     f"{grid.sound_alert_once_per_sound}")
  if args.max_cases is not None and args.max_cases < 1:
    raise UsageError(f"--max-cases must be >= 1, got {args.max_cases}")
  defaults = build_parser().parse_args(["tune", "--manifest", "x", "--out", "x"])
  command = shlex.join(["audio-interaction", "tune", *(
      token for name in ("checkpoint", "manifest", "out", *GRID_FLAGS, "seed", "max_cases",
                         "resamples")
      if name in ("manifest", "out") or getattr(args, name) != getattr(defaults, name)
      for token in _flag_tokens(name, getattr(args, name)))] + (
          ["--write-bundle"] if args.write_bundle else []) + (
          ["--keep-policy"] if args.keep_policy else []) + (
          ["--budget-counts-late-alerts"] if args.budget_counts_late_alerts else []))
  rule = tune.Rule(false_alarm_figure="false_alarms_per_hour"
                   if args.budget_counts_late_alerts else tune.Rule.false_alarm_figure)
  done = tune_run.run_tune(
      checkpoint=args.checkpoint, manifests=args.manifest, out_dir=args.out, grid=grid,
      rule=rule, seed=args.seed, max_cases=args.max_cases, resamples=args.resamples,
      write_bundle=args.write_bundle, overwrite=args.overwrite, command=command,
      keep_policy=args.keep_policy)
  result = done["result"]
  alarm = tune.warning(result)
  if alarm:
    print(alarm, file=sys.stderr)
  chosen = result["chosen"]
  print(f"chosen: {chosen['name']}")
  stage = chosen.get("sound_alerts")
  for half in ("A", "B", "all"):
    figures = (stage["candidates"][stage["index"]] if stage
               else result["candidates"][chosen["index"]])[half]
    print(f"  {half}: cut-in {figures['false_cut_in_rate']}, miss {figures['miss_rate']}, "
          f"median latency {figures['median_latency_s']} s, alert recall {figures['recall']}, "
          f"false alarms/h {figures['false_alarms_per_hour']}")
  if done["written"] is not None:
    print(f"infer block written to {done['written']}")
  print(f"{result['timing']['recordings']} recordings x {result['timing']['rows']} candidates "
        f"in {done['seconds']:.0f} s; report: {done['paths']['markdown']}")
  print(f"Reproduce: {command}")
  return 0


def _flag_tokens(name: str, value) -> list[str]:
  """`--flag value` tokens of a parsed argument (lists joined by commas, repeated
  --manifest)."""
  flag = "--" + name.replace("_", "-")
  if name == "manifest":
    return [token for path in value for token in (flag, path)]
  if isinstance(value, tuple):
    return [flag, ",".join(f"{v:g}" for v in value)]
  return [flag, str(value)]


BUNDLE_BRINGS_CONFIG = " (the bundle brings its own)"


def _refuse_config(verb: str, overrides: list[str], why: str = "") -> None:
  """UsageError naming the first config override given to a verb that takes none."""
  if overrides:
    raise UsageError(f"{overrides[0].split('=')[0]}: {verb} takes no config{why}")


def _write_json_lines(path: str | None, results: list[dict]) -> None:
  """One JSON line per result to `path` (--json), when given."""
  if path:
    import json
    pathlib.Path(path).write_text("".join(json.dumps(r) + "\n" for r in results))


def _audio_file_flags(parser: argparse.ArgumentParser, json_help: str) -> None:
  """The inputs of the verbs that read audio files with a bundle's head: the files,
  --checkpoint and --json."""
  parser.add_argument("paths", nargs="+", help="audio files (any rate: resampled)")
  parser.add_argument("--checkpoint", default=None, help=BUNDLE_HELP)
  parser.add_argument("--json", default=None, metavar="OUT", help=json_help)


def _transcribe(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import transcribe
  from audio_interaction.infer import ctc_lm
  _refuse_config("transcribe", overrides, BUNDLE_BRINGS_CONFIG)
  lm = (ctc_lm.BeamSettings(lm_weight=args.lm_weight, word_score=args.lm_word_score)
        if args.lm else None)
  results = transcribe.transcribe_files(args.paths, args.checkpoint, lm)
  for result in results:
    print(f"{result['file']} ({result['seconds']:.1f} s): {result['text']}")
    if args.words:
      for word, time in result["words"]:
        print(f"  {time:7.2f} s  {word}")
  _write_json_lines(args.json, results)
  return 0


def _name_sound(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import name_sound
  _refuse_config("name-sound", overrides, BUNDLE_BRINGS_CONFIG)
  segments = (name_sound.SegmentSettings(args.segment_threshold, args.segment_min_chunks,
                                         args.segment_by, args.segment_max_gap)
              if args.segments else None)
  results = name_sound.name_sound_files(args.paths, args.checkpoint, args.top, segments)
  for result in results:
    heard = ", ".join(f"{s['name']} ({s['probability']:.2f})" for s in result["sounds"])
    print(f"{result['file']} ({result['seconds']:.1f} s): {heard}")
    for segment in result.get("segments", ()):
      print(f"  {segment['start_s']:7.2f}-{segment['end_s']:.2f} s  {segment['name']} "
            f"({segment['probability']:.2f})")
  _write_json_lines(args.json, results)
  return 0


def _ask(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import ask
  _refuse_config("ask", overrides, BUNDLE_BRINGS_CONFIG)
  try:
    results = ask.ask_files(args.paths, args.question, args.checkpoint)
  except ValueError as error:
    raise UsageError(str(error)) from error
  for result in results:
    print(f"{result['file']} ({result['seconds']:.1f} s): {result['answer']}")
  _write_json_lines(args.json, results)
  return 0


def _proactive_bench(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.apps import proactive_bench
  from audio_interaction.eval.proactive_bench import format_stats
  done = proactive_bench.run_proactive_bench(
      manifest=args.manifest, root=args.root, out_dir=args.out, bundle=args.checkpoint,
      infer=_infer_config("proactive-bench", args.checkpoint, overrides),
      answers=args.answers, overwrite=args.overwrite)
  print(format_stats(done["stats"]))
  print(f"predictions: {done['paths']['predictions']}; stats: {done['paths']['stats']}")
  return 0


def _export(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.export.stablehlo import parse_platforms
  from audio_interaction.train import export as train_export
  try:
    platforms = parse_platforms(args.platforms)
  except ValueError as error:
    raise UsageError(str(error)) from error
  if args.batch < 1:
    raise UsageError(f"--batch {args.batch}: must be >= 1")
  options = dict(export_format=args.format, batch=args.batch, platforms=platforms)
  if args.bundle is not None:
    if overrides:
      raise UsageError(f"--bundle brings its own config; drop {' '.join(overrides)}")
    out = train_export.export_bundle(args.bundle, args.out, **options)
  else:
    config = _config_from(args, overrides)
    out = train_export.export_checkpoint(config, args.workdir, args.out,
                                         use_best=not args.latest, **options)
  print(f"{args.format} export written to {out}")
  return 0


# Models up to this many parameters get their streaming step timed on this CPU.
_INSPECT_MEASURE_PARAMS = 500e6


def _inspect(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.model import inspect_model
  from audio_interaction.model.model import AudioInteractionModel
  config = _config_from(args, overrides)
  model = AudioInteractionModel(config)
  summary = inspect_model.summarize(model)
  print(f"{args.config}: {summary.describe()}")
  batch, length, chunks = config.data.batch_size, config.data.max_len, config.data.max_chunks
  costs = inspect_model.step_costs(model, batch, length, chunks)
  cpu = (inspect_model.measure_stream_step(model)
         if summary.total_params <= _INSPECT_MEASURE_PARAMS else None)
  print(inspect_model.describe_costs(costs, batch, length, chunks, cpu))
  return 0


def _build_real_dev(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.corpus import real_audio
  _refuse_config("build-real-dev", overrides)
  if args.streams < 0:
    raise UsageError(f"--streams must be >= 0, got {args.streams}")
  try:
    summary = real_audio.fetch_and_build(args.out, args.cache, streams=args.streams,
                                         seed=args.seed, turn_end=args.turn_end)
  except real_audio.FetchError as error:  # names the package; the rest is resumable
    print(f"audio-interaction build-real-dev: error: {error}", file=sys.stderr)
    return 1
  print(summary)
  return 0


def _lead_in(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.corpus import lead_in
  _refuse_config("lead-in", overrides)
  if not pathlib.Path(args.manifest).is_file():
    raise UsageError(f"--manifest {args.manifest}: no such manifest")
  try:
    lead = lead_in.Lead.parse(args.lead)
    summary = lead_in.write_lead_in_manifest(args.manifest, lead, args.out, seed=args.seed,
                                             unaddressed=args.unaddressed,
                                             max_rows=args.max_rows, channel=args.channel)
  except (ValueError, FileNotFoundError) as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(summary))
  return 0


def _head_fit_parser(verbs, name: str, help_text: str, *, clip_positions: bool = True
                     ) -> argparse.ArgumentParser:
  """A verb that fits one head of a bundle over its frozen encoder (or decoder): its common
  flags (`clip_positions`: whether it encodes clips, `ClipEncoder`)."""
  parser = verbs.add_parser(name, help=help_text)
  parser.add_argument("--bundle", required=True,
                      help=BUNDLE_HELP)
  parser.add_argument("--out", required=True, help="the new bundle's directory")
  parser.add_argument("--train-audio", default=None,
                      help="fetch-train-audio's folder (default: "
                           "~/.cache/audio_interaction/debs/extracted)")
  if not clip_positions:
    return parser
  parser.add_argument("--clip-positions", choices=("random", "start"), default="random",
                      help="where each clip starts in the encoder's position window: a seeded "
                           "random chunk boundary (default; the head then works anywhere in "
                           "a stream) or its start, as an offline clip (no effect with rotary "
                           "positions)")
  return parser


def _recorded_lines_flags(parser: argparse.ArgumentParser, *, sources: str,
                          held_out_share: float, held_out_use: str,
                          max_lines: int | None) -> None:
  """The flags of a head fit on the TRAIN side's recorded lines (`_recorded_lines_fit`)."""
  parser.add_argument("--sources", default=sources,
                      help="comma-separated recorded-speech sources whose lines are the data")
  parser.add_argument("--held-out-share", type=float, default=held_out_share,
                      help=f"share of the voices held out {held_out_use}")
  parser.add_argument("--max-lines", type=int, default=max_lines,
                      help="at most this many lines (a seeded random subset)")


def _train_audio_root(args: argparse.Namespace, alternative: str = "") -> str:
  """--train-audio, or fetch-train-audio's default folder; UsageError if it is missing."""
  from audio_interaction.corpus import real_audio
  root = args.train_audio or str(real_audio.default_cache() / "extracted")
  if not pathlib.Path(root).is_dir():
    raise UsageError(f"--train-audio {root}: no such folder; run `audio-interaction "
                     f"fetch-train-audio` first{alternative}")
  return root


def _fit_sound_head(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.train import sound_head
  _refuse_config("fit-sound-head", overrides, BUNDLE_BRINGS_CONFIG)
  root = None if args.procedural_only else _train_audio_root(
      args, ", or pass --procedural-only")
  for name, value in (("--per-class", args.per_class), ("--steps", args.steps)):
    if value < 1:
      raise UsageError(f"{name} {value}: must be >= 1")
  if not 0 <= args.quiet_lead <= 30:
    raise UsageError(f"--quiet-lead {args.quiet_lead}: must be in [0, 30] seconds")
  if not 0 <= args.channel_share <= 1:
    raise UsageError(f"--channel-share {args.channel_share}: must be in [0, 1]")
  read_blocks = None
  if args.read_blocks is not None:
    try:
      read_blocks = tuple(int(b) for b in args.read_blocks.split(",") if b.strip())
    except ValueError as error:
      raise UsageError(f"--read-blocks {args.read_blocks!r}: comma-separated encoder block "
                       f"indices (e.g. 0,1,2; '' for the final frames alone)") from error
  from audio_interaction.export import portable
  bundle = portable.resolve_bundle(args.bundle)
  try:
    summary = sound_head.fit_bundle_head(
        bundle, args.out, train_audio_root=root, corpus_dir=args.corpus,
        corpus_rows=args.corpus_rows, corpus_sounds=args.corpus_sounds,
        other_sounds=not args.no_other_sounds,
        per_class=args.per_class, seed=args.seed, l2=args.l2,
        steps=args.steps, first_positions=args.clip_positions, lead_seconds=args.quiet_lead,
        read_blocks=read_blocks, channel_share=args.channel_share)
  except (ValueError, FileNotFoundError) as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(summary, indent=1))
  print(f"bundle with the fitted head written to {args.out}")
  return 0


def _recorded_lines_fit(args: argparse.Namespace, overrides: list[str], verb: str,
                        counts: tuple[tuple[str, int], ...]) -> tuple[str, tuple[str, ...], str]:
  """The checked inputs of a head fit on the TRAIN side's recorded lines: (the audio
  folder, the sources, the bundle); UsageError naming the first bad flag, before any work.

  Args:
    counts: (flag, value) pairs that must be >= 1.
  """
  from audio_interaction.corpus import real_speech
  from audio_interaction.export import portable
  _refuse_config(verb, overrides, BUNDLE_BRINGS_CONFIG)
  root = _train_audio_root(args)
  sources = tuple(s for s in args.sources.split(",") if s)
  unknown = [s for s in sources if s not in real_speech.SOURCES]
  if unknown or not sources:
    raise UsageError(f"--sources {args.sources}: choose from {','.join(real_speech.SOURCES)}")
  for name, value in counts:
    if value is not None and value < 1:
      raise UsageError(f"{name} {value}: must be >= 1")
  if not 0.0 <= args.held_out_share < 1.0:
    raise UsageError(f"--held-out-share {args.held_out_share}: must be in [0, 1)")
  return root, sources, portable.resolve_bundle(args.bundle)


def _fit_ctc_head(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.train import ctc_head
  root, sources, bundle = _recorded_lines_fit(
      args, overrides, "fit-ctc-head", (("--steps", args.steps), ("--eval-every", args.eval_every),
                                        ("--frames-per-batch", args.frames_per_batch)))
  if args.copies < 0:
    raise UsageError(f"--copies {args.copies}: must be >= 0")
  if args.monitor and not pathlib.Path(args.monitor).is_file():
    raise UsageError(f"--monitor {args.monitor}: no such manifest")
  try:
    summary = ctc_head.fit_bundle_ctc_head(
        bundle, args.out, train_audio_root=root, sources=sources,
        held_out_share=args.held_out_share, copies=args.copies, max_lines=args.max_lines,
        steps=args.steps, learning_rate=args.learning_rate,
        frames_per_batch=args.frames_per_batch, eval_every=args.eval_every,
        warm_start=args.warm_start, seed=args.seed, monitor_manifest=args.monitor,
        targets=args.targets, features_cache=args.features_cache,
        first_positions=args.clip_positions)
  except (ValueError, FileNotFoundError) as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(summary, indent=1))
  print(f"bundle with the fitted CTC head written to {args.out}")
  return 0


def _fit_turn_head(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.train import turn_head
  root, sources, bundle = _recorded_lines_fit(
      args, overrides, "fit-turn-head", (("--steps", args.steps), ("--chunks", args.chunks),
                                         ("--max-lines", args.max_lines)))
  for name, value in (("--speech-chunks", args.speech_chunks), ("--sound-clips", args.sound_clips)):
    if value < 0:
      raise UsageError(f"{name} {value}: must be >= 0")
  if not 0.0 <= args.hybrid_gate <= 1.0:
    raise UsageError(f"--hybrid-gate {args.hybrid_gate}: must be in [0, 1] (a P(SPEAK))")
  if not 0.0 <= args.effects_share <= 1.0:
    raise UsageError(f"--effects-share {args.effects_share}: must be in [0, 1]")
  try:
    summary = turn_head.fit_bundle_turn_head(
        bundle, args.out, train_audio_root=root, sources=sources, max_lines=args.max_lines,
        chunks=args.chunks, speech_chunks=args.speech_chunks,
        second_parts=args.second_parts, sound_clips_per_class=args.sound_clips,
        held_out_share=args.held_out_share, l2=args.l2, steps=args.steps,
        seed=args.seed, first_positions=args.clip_positions, features=args.features,
        hybrid_gate=args.hybrid_gate, effects_share=args.effects_share)
  except (ValueError, FileNotFoundError) as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(summary, indent=1))
  what = ("turn-end head" if args.features == "encoder" else
          "prosody turn-end model (infer.prosody_turn_end)")
  print(f"bundle with the fitted {what} written to {args.out} (its hybrid policy reads "
        f"it; choose the operating point with `audio-interaction tune`)")
  return 0


def _fit_decision_head(args: argparse.Namespace, overrides: list[str]) -> int:
  import json
  from audio_interaction.train import decision_head
  root, sources, bundle = _recorded_lines_fit(
      args, overrides, "fit-decision-head", (("--steps", args.steps),
                                             ("--max-lines", args.max_lines)))
  if args.speech_chunks < 0:
    raise UsageError(f"--speech-chunks {args.speech_chunks}: must be >= 0")
  for name, value in (("--after-seconds", args.after_seconds),
                      ("--max-lead-seconds", args.max_lead_seconds)):
    if not value >= 0 or (name == "--after-seconds" and value == 0):
      raise UsageError(f"{name} {value}: must be > 0 (>= 0 for --max-lead-seconds)")
  try:
    summary = decision_head.fit_bundle_decision_head(
        bundle, args.out, train_audio_root=root, sources=sources, max_lines=args.max_lines,
        after_seconds=args.after_seconds, speech_chunks=args.speech_chunks,
        max_lead_seconds=args.max_lead_seconds, held_out_share=args.held_out_share,
        l2=args.l2, steps=args.steps, seed=args.seed)
  except (ValueError, FileNotFoundError) as error:
    raise UsageError(_one_line(error)) from error
  print(json.dumps(summary, indent=1))
  print(f"bundle with the refitted decision head written to {args.out} (its infer block is "
        "kept; choose the operating point with `audio-interaction tune --gated-thresholds`)")
  return 0


def _pin_instruction(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.export import portable
  _refuse_config("pin-instruction", overrides)
  try:
    record = portable.pin_instruction(args.bundle, args.out, pinned_prefix=args.pinned_prefix,
                                      window=args.window)
  except (ValueError, FileNotFoundError, FileExistsError, portable.BundleError) as error:
    raise UsageError(_one_line(error)) from error
  print(f"bundle written to {args.out}: model.decoder.pinned_prefix={record['pinned_prefix']}, "
        f"model.decoder.window={record['window']} (was {record['was']['pinned_prefix']} and "
        f"{record['was']['window']}); check its operating point with `audio-interaction tune`")
  return 0


def _fetch_train_audio(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.corpus import real_audio
  _refuse_config("fetch-train-audio", overrides)
  cache = args.cache or real_audio.default_cache()
  try:
    root = real_audio.fetch_packages(real_audio.TRAIN_PACKAGES, cache)
  except real_audio.FetchError as error:  # names the package; the rest is resumable
    print(f"audio-interaction fetch-train-audio: error: {error}", file=sys.stderr)
    return 1
  events = real_audio.train_sound_clips(root)
  beds = real_audio.train_noise_files(root)
  print(f"{root}: {sum(c.mapped for c in events)} labelled sounds of the project's classes "
        f"({len(events)} in all), {len(beds)} music/ambience beds; build with "
        f"--config.data.randomize.train_audio_root={root}")
  return 0


def _label_train_speech(args: argparse.Namespace, overrides: list[str]) -> int:
  from audio_interaction.corpus import real_audio, real_speech
  from audio_interaction.train import pseudo_label
  config = _config_from(args, overrides)
  root = args.root or str(real_audio.default_cache() / "extracted")
  out = args.out or real_speech.ENGLISH_LABELS[args.source]
  try:
    voices = real_speech.ENGLISH_VOICES[args.source](root)
    rows = pseudo_label.label_voices(voices, out, config, batch=args.batch)
  except (FileNotFoundError, ImportError, ValueError) as error:
    print(f"audio-interaction label-train-speech: error: {error}", file=sys.stderr)
    return 1
  print(f"{rows} clips transcribed -> {out}")
  return 0


def _number(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
  if math.isnan(value):
    raise argparse.ArgumentTypeError("not a number: nan")
  return value


def _probability(text: str) -> float:
  value = _number(text)
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
  return value


def _positive(text: str) -> float:
  value = _number(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
  return value


class _Parser(argparse.ArgumentParser):
  """Usage errors as one line (`audio-interaction VERB: error: ...`), exit code 2."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")


def _lm_search_flags(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
  """`flag` (turns the CTC head's LM beam search on), `flag`-weight and
  `flag`-word-score (its `infer.ctc_lm.BeamSettings`)."""
  from audio_interaction.infer.ctc_lm import BeamSettings
  parser.add_argument(flag, action="store_true", help=help_text)
  parser.add_argument(f"{flag}-weight", type=float, default=BeamSettings.lm_weight,
                      help=f"{flag}: weight of the LM's log-probability")
  parser.add_argument(f"{flag}-word-score", type=float, default=BeamSettings.word_score,
                      help=f"{flag}: score added per word")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="audio-interaction", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

  def add_config(sub):
    sub.add_argument("--config", default=DEFAULT_CONFIG,
                     help="experiments/NAME.py[:variant]; fields are overridden with "
                          "--config.a.b=value")

  demo = verbs.add_parser("demo", help="run the model on a generated example stream")
  add_config(demo)
  demo.add_argument("--out", default="runs/demo", help="where the timeline and log go")
  demo.add_argument("--threshold", type=_probability, default=None,
                    help="P(SPEAK) to start speaking (default: the bundle's infer.threshold)")
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--bundle", default=None,
                    help=BUNDLE_HELP)
  demo.add_argument("--subtask", default="demo_tour",
                    help="which sub-task builds the example stream: demo_tour (a question "
                    "with a pause, an alarm, a barge-in) or one of the 28")
  demo.set_defaults(run=_demo)

  listen = verbs.add_parser("listen", help="the model listens live to a file, the mic or stdin")
  where = listen.add_mutually_exclusive_group(required=True)
  where.add_argument("path", nargs="?", help="an audio file (played at --speed)")
  where.add_argument("--mic", action="store_true", help="the microphone (sounddevice)")
  where.add_argument("--stdin", action="store_true", help="raw mono PCM on standard input")
  listen.add_argument("--checkpoint", default=None,
                      help=BUNDLE_HELP)
  listen.add_argument("--instruction", default=None, help="what the model is told to do")
  listen.add_argument("--threshold", type=_probability, default=None,
                      help="P(SPEAK) to start speaking (default: the bundle's infer.threshold; "
                           "other inference settings: --config.infer.NAME=value)")
  listen.add_argument("--speak", action="store_true",
                      help="also speak the replies (espeak-ng) into OUT/replies.wav")
  listen.add_argument("--speed", type=_positive, default=1.0,
                      help="file playback speed, 1 = real time, inf = as fast as possible "
                           "(with --stdin, inf: the input is not live, never drop audio)")
  listen.add_argument("--out", default="runs/listen", help="where the log and timeline go")
  listen.add_argument("--format", default="s16le", choices=("s16le", "f32le"),
                      help="--stdin PCM sample format")
  listen.add_argument("--rate", type=int, default=16000, help="--stdin sample rate (Hz)")
  listen.add_argument("--device", default=None, help="--mic device name or index")
  listen.add_argument("--stall-timeout", type=_positive, default=2.0,
                      help="seconds without audio before a stall is reported")
  listen.add_argument("--every-chunk", action="store_true", help="print a line per chunk")
  listen.set_defaults(run=_listen)

  build = verbs.add_parser("build-data", help="generate a corpus split (resumable)")
  add_config(build)
  build.add_argument("--split", default="train", choices=("train", "eval", "test"))
  build.add_argument("--num-examples", type=int, required=True)
  build.add_argument("--workers", type=int, default=1, help="worker processes")
  build.add_argument("--subtasks", default="", help="comma-separated sub-tasks (default: all 28)")
  build.add_argument("--runner", default="local",
                     choices=("local", "direct", "prism", "dataflow", "flink", "spark"),
                     help="local: --workers processes here; else an Apache Beam runner "
                          "(needs the [beam] extra; docs/beam.md)")
  build.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                     help="a Beam pipeline option, e.g. num_workers=8 (repeatable)")
  build.add_argument("--pipeline-options", default="",
                     help='Beam pipeline flags as one string, e.g. "--project p --region r"')
  build.set_defaults(run=_build_data)

  card = verbs.add_parser("dataset-card",
                          help="abilities, sub-tasks, hours, voices and sounds of a built split")
  add_config(card)
  card.add_argument("--split", default="train")
  card.add_argument("--dir", default="", help="the split's directory (default: config.data.dir)")
  card.add_argument("--json", default="", help="also write the card as JSON here")
  card.add_argument("--rows", action="store_true",
                    help="also read every record: what rows of the config's shape keep "
                         "(streams cut, examples dropped, reply and SPEAK targets kept, "
                         "per ability)")
  card.set_defaults(run=_dataset_card)

  show = verbs.add_parser("show-example", help="picture, audio and text of one corpus example")
  add_config(show)
  show.add_argument("--split", default="train", choices=("train", "eval", "test"))
  show.add_argument("--index", type=int, default=0, help="example index in the split")
  show.add_argument("--subtask", default="", help="build this sub-task directly instead")
  show.add_argument("--seed", type=int, default=None,
                    help="with --subtask: the example's seed (default 0); without: the "
                         "split seed (default: the one build-data used)")
  show.add_argument("--subtasks", default="",
                    help="the --subtasks build-data was given, so --index matches")
  show.add_argument("--out", default="runs/show", help="where example.png/.wav/.txt go")
  show.add_argument("--play", action="store_true", help="also play the audio (sounddevice)")
  show.set_defaults(run=_show_example)

  compare = verbs.add_parser("compare-runs",
                             help="several train runs' held-out curves on shared axes, and a table")
  compare.add_argument("workdirs", nargs="+", help="train --workdir directories")
  compare.add_argument("--name", action="append", default=None,
                       help="a run's name, once per workdir in their order (default: the "
                            "workdirs' folder names)")
  compare.add_argument("--step", type=int, default=None,
                       help="the table's figures at the last eval at or before this step "
                            "(default: each run's last)")
  compare.add_argument("--title", default="", help="the picture's title")
  compare.add_argument("--out", default="runs/compare_runs.png", help="the picture")
  compare.set_defaults(run=_compare_runs)

  train = verbs.add_parser("train", help="train a config; resumes from --workdir")
  add_config(train)
  train.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs")
  train.set_defaults(run=_train)

  distil = verbs.add_parser(
      "distill-encoder", help="chunk-causal encoder <- the same encoder over whole windows")
  add_config(distil)
  distil.add_argument("--workdir", required=True,
                      help="checkpoints, TensorBoard logs, and the student in WORKDIR/encoder")
  distil.set_defaults(run=_distill_encoder)

  held = verbs.add_parser("heldout", help="free-running check on held-out generated streams")
  add_config(held)
  held.add_argument("--bundle", default=None, help=BUNDLE_HELP)
  held.add_argument("--streams", type=int, default=2, help="streams per online sub-task")
  held.add_argument("--threshold", type=float, default=None,
                    help="P(SPEAK) to speak (default: the bundle's infer.threshold)")
  held.add_argument("--json", default="", help="also write the rates here")
  held.set_defaults(run=_heldout)

  evaluate = verbs.add_parser("eval", help="benchmark suites B1-B8 with baselines; writes a report")
  add_config(evaluate)
  evaluate.add_argument("--checkpoint", default=None,
                        help=BUNDLE_HELP + "; or a training workdir")
  evaluate.add_argument("--suites", default="all", help="all, or a comma list like B1,B5")
  evaluate.add_argument("--manifest", default=None,
                        help="JSONL manifest of recordings (default: held-out generated streams)")
  evaluate.add_argument("--tfds", default=None, metavar="NAME:SPLIT",
                        help="a TFDS speech or sound data set, e.g. librispeech:test_clean[:200] "
                             "(B1/B2) or speech_commands:test (B3-like keywords)")
  evaluate.add_argument("--classes", default=None, metavar="FILE",
                        help="alert classes of one's own (one per line, or a JSON list)")
  evaluate.add_argument("--streams", type=int, default=2, help="generated streams per sub-task")
  evaluate.add_argument("--min-turns", type=int, default=100,
                        help="generated streams: more B5 streams until it has this many turns")
  evaluate.add_argument("--min-alert-events", type=int, default=50,
                        help="generated streams: more B6 streams until it has this many alerts")
  evaluate.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples behind each 95%% interval")
  evaluate.add_argument("--out", default="runs/eval", help="where the report goes")
  evaluate.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --out (refused otherwise)")
  evaluate.add_argument("--threshold", type=_probability, default=None,
                        help="operating P(SPEAK) (default: the model's infer.threshold)")
  evaluate.add_argument("--vad", default=None, choices=("silero", "webrtc", "energy"),
                        help="the silence-timer baseline's voice activity detector "
                             "(default: the model's infer.vad)")
  evaluate.add_argument("--silence", type=float, default=None,
                        help="the operating point's silence, s: the timer policy's wait, the "
                             "hybrid's backstop (default: the model's infer.silence_seconds)")
  evaluate.add_argument("--baseline-silence", type=float, default=None,
                        help="the silence of the baseline timer beside the model, s "
                             "(default: 0.7, the issue's reference, whatever the model's own)")
  evaluate.add_argument("--policy", choices=("model", "hybrid", "gated_timer", "silence_timer"),
                        default=None,
                        help="the model's decision policy at the operating point (default: "
                             "the model's infer.policy); the sweep runs bare thresholds")
  evaluate.add_argument("--min-silence", type=float, default=None,
                        help="hybrid policy: silence before the model may speak, s "
                             "(default: the model's infer.min_silence_seconds)")
  evaluate.add_argument("--sound-alert", type=_probability, default=None, metavar="P",
                        help="alerts from the sound-event head at this probability, 0: off "
                             "(default: the model's infer.sound_alert_threshold)")
  evaluate.add_argument("--sound-watch", type=_probability, default=None, metavar="P",
                        help="the sound an instruction asks for (\"tell me when you hear "
                             "...\") watched by the sound-event head at this probability, "
                             "0: off (default: the model's infer.sound_watch_threshold)")
  evaluate.add_argument("--word-watch", action=argparse.BooleanOptionalAction, default=None,
                        help="the word or cue an instruction names (\"whenever you hear the "
                             "word ...\", \"when I say ..., list the sounds\") and spoken "
                             "requests heard in the CTC transcript (default: the model's "
                             "infer.word_watch)")
  evaluate.add_argument("--seed", type=int, default=None,
                        help="first seed of the generated streams (default 9000; another "
                             "seed draws other held-out streams, e.g. to confirm a choice "
                             "made on the default ones)")
  evaluate.add_argument("--sound-name-bias", type=float, default=None, metavar="NATS",
                        help="bias replies towards the names of the sounds the sound-event "
                             "head heard, 0: off (default: the model's infer.sound_name_bias)")
  evaluate.add_argument("--sound-name-gate", type=_probability, default=None, metavar="P",
                        help="the name bias applies where the decoder gives the names' tokens "
                             "at least this probability, 0: everywhere (default: the "
                             "model's infer.sound_name_gate)")
  evaluate.add_argument("--sound-name-once", action="store_true",
                        help="bias each name token once per reply (default: the model's "
                             "infer.sound_name_once)")
  evaluate.add_argument("--sound-name-whole", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="bias each name whole: its first token, then the rest of a "
                             "started name; --no-sound-name-whole: as a bag of tokens "
                             "(default: the model's infer.sound_name_whole)")
  evaluate.add_argument("--sound-alert-once-per-sound", action="store_true",
                        help="one alert per sound of any alerting class, not one per class "
                             "(default: the model's infer.sound_alert_once_per_sound)")
  _lm_search_flags(evaluate, "--ctc-lm", "B2: also the CTC head's transcript by beam search "
                                        "with an English word LM (infer/ctc_lm.py)")
  evaluate.add_argument("--sweep", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8",
                        help="decision thresholds swept for B5/B6 (each one a run)")
  evaluate.set_defaults(run=_eval)

  tuner = verbs.add_parser(
      "tune", help="choose the operating point (policy, threshold, silences) on dev manifests")
  tuner.add_argument("--checkpoint", default=None,
                     help=BUNDLE_HELP)
  tuner.add_argument("--manifest", action="append", required=True,
                     help="JSONL manifest (repeatable): turn-taking streams (B5) and/or alert "
                          "events (B6)")
  tuner.add_argument("--out", required=True,
                     help="writes tune.json, tune.md, tune.png (and tune_alerts.png when "
                          "alerts are tuned) here")
  tuner.add_argument("--overwrite", action="store_true", help="replace a tune run in --out")
  tuner.add_argument("--write-bundle", action="store_true",
                     help="store the chosen infer block in the bundle's config.json")
  tuner.add_argument("--keep-policy", action="store_true",
                     help="keep the bundle's own decision policy (scored beside the 0.7 s "
                          "timer; the policy grid is not run): tune only the sound alerts")
  tuner.add_argument("--budget-counts-late-alerts", action="store_true",
                     help="the 10/h false-alarm budget counts late alerts of real alarms too "
                          "(the whole B6 figure, as tunes before session 25); default: "
                          "false alarms in benign audio only")
  tuner.add_argument("--thresholds", type=_number_list, default=None,
                     help="P(SPEAK) thresholds of the model-alone candidates (comma list; "
                          "this and the grid flags below default to eval.tune.Grid's)")
  tuner.add_argument("--hybrid-thresholds", type=_number_list,
                     default=None, help="the hybrid's thresholds")
  tuner.add_argument("--min-silences", type=_number_list, default=None,
                     help="the hybrid's silence (s) before a confident model may speak")
  tuner.add_argument("--hybrid-silences", type=_number_list,
                     default=None,
                     help="the hybrid's backstop timer silence (s)")
  tuner.add_argument("--gated-thresholds", type=_number_list, default=None,
                     help="the gated timer's thresholds: after the silence it speaks only if "
                          "P(SPEAK) >= θ (none by default: not searched)")
  tuner.add_argument("--gated-silences", type=_number_list, default=None,
                     help="the gated timer's silences (s), each at each --gated-thresholds")
  tuner.add_argument("--timer-silences", type=_number_list, default=None,
                     help="the silence-timer candidates (s); the 0.7 s reference is always run")
  tuner.add_argument("--sound-alert-thresholds", type=_number_list, default=None,
                     help="then the chosen policy with alerts from the sound-event head at "
                          "each of these (and off), one pass per threshold; the rule's pick "
                          "joins the infer block")
  tuner.add_argument("--sound-alert-holds", type=_number_list, default=None,
                     help="with --sound-alert-thresholds, also these unheard seconds before a "
                          "class alerts again (each threshold at each)")
  tuner.add_argument("--sound-alert-chunks", type=_number_list, default=None,
                     help="with --sound-alert-thresholds, also these consecutive chunks a "
                          "class must be heard for (each threshold at each)")
  tuner.add_argument("--sound-alert-once-per-sound", type=_number_list, default=None,
                     help="with --sound-alert-thresholds: 0 (an alert per class), 1 (one "
                          "alert per sound, any alerting class) or 0,1 (both, each "
                          "threshold at each)")
  tuner.add_argument("--seed", type=int, default=0, help="seed of the A/B split (and --max-cases)")
  tuner.add_argument("--max-cases", type=int, default=None,
                     help="at most this many cases per suite (a seeded subset), for a short run")
  tuner.add_argument("--resamples", type=int, default=1000,
                     help="bootstrap resamples behind each 95%% interval")
  tuner.set_defaults(run=_tune)

  transcriber = verbs.add_parser(
      "transcribe", help="what the model's CTC head hears in audio files (greedy, or --lm)")
  _audio_file_flags(transcriber, "write one JSON line per file: text, words with times")
  _lm_search_flags(transcriber, "--lm", "beam search with an English word LM (infer/ctc_lm.py)")
  transcriber.add_argument("--words", action="store_true",
                           help="also each word with its time (s, end of its chunk)")
  transcriber.set_defaults(run=_transcribe)

  namer = verbs.add_parser(
      "name-sound", help="what sound the model's sound-event head hears in audio files")
  _audio_file_flags(namer, "write one JSON line per file: its classes and mean "
                           "probabilities (and segments)")
  namer.add_argument("--top", type=int, default=3,
                     help="how many sound classes to list per file, most probable first")
  namer.add_argument("--segments", action="store_true",
                     help="also where in each file the head hears each sound (start-end s)")
  namer.add_argument("--segment-threshold", type=float, default=0.5,
                     help="--segments: a chunk hears a sound when P(none) <= 1 - this "
                          "(--segment-by class: its likeliest class at >= this)")
  namer.add_argument("--segment-by", choices=("sound", "class"), default="sound",
                     help="--segments: runs of chunks hearing some sound, each named by its "
                          "mean class probabilities, or runs of one likeliest class (a long "
                          "sound the head calls now one class, now a kindred one, splits)")
  namer.add_argument("--segment-max-gap", type=int, default=2,
                     help="--segments by sound: the longest gap (chunks) between heard "
                          "chunks that stays inside one segment (a ringtone's pauses)")
  namer.add_argument("--segment-min-chunks", type=int, default=2,
                     help="--segments: the fewest chunks running that make a segment")
  namer.set_defaults(run=_name_sound)

  asker = verbs.add_parser(
      "ask", help="a question about each audio file, answered by the model's decoder")
  _audio_file_flags(asker, "write one JSON line per file: its question and answer")
  asker.add_argument("--question", default="What sound is this?",
                     help="what to ask about each file (the offline prompt's instruction)")
  asker.set_defaults(run=_ask)

  bench = verbs.add_parser("proactive-bench",
                           help="the Proactive-Sound-Bench layout: RESPOND/IGNORE per clip")
  add_config(bench)
  bench.add_argument("--manifest", required=True,
                     help="JSONL: id, path (relative to --root), description, decision")
  bench.add_argument("--root", required=True, help="the folder the paths are relative to")
  bench.add_argument("--out", required=True, help="writes predictions.jsonl and stats.json here")
  bench.add_argument("--answers", default=None,
                     help="optional JSONL of standard_answers per id (kept beside predictions)")
  bench.add_argument("--checkpoint", default=None, help=BUNDLE_HELP)
  bench.add_argument("--overwrite", action="store_true", help="replace predictions in --out")
  bench.set_defaults(run=_proactive_bench)

  export = verbs.add_parser(
      "export", help="write a training workdir's model (or a bundle's) as a bundle, "
                     "safetensors or serialized StableHLO streaming steps")
  add_config(export)
  source = export.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="a training workdir (its best checkpoint)")
  source.add_argument("--bundle", help="a model bundle directory (brings its own config)")
  export.add_argument("--out", required=True)
  export.add_argument("--latest", action="store_true", help="newest step instead of best eval")
  export.add_argument("--format", choices=("bundle", "safetensors", "stablehlo"), default="bundle",
                      help="bundle: params.msgpack; safetensors: model.safetensors with dotted "
                      "names; stablehlo: jax.export'ed perceive/speak steps + manifest")
  export.add_argument("--batch", type=int, default=1,
                      help="stablehlo: the number of streams the exported steps run at once")
  export.add_argument("--platforms", default="cpu",
                      help="stablehlo: comma-separated platforms to lower for (cpu,cuda,rocm,tpu)")
  export.set_defaults(run=_export)

  inspect = verbs.add_parser("inspect", help="parameter count and AOT lowering of a config")
  add_config(inspect)
  inspect.set_defaults(run=_inspect)

  real_dev = verbs.add_parser(
      "build-real-dev", help="the real-audio DEV set from Debian packages (model selection only)")
  real_dev.add_argument("--out", required=True, help="where the wavs and JSONL manifests go")
  real_dev.add_argument("--cache", default=None,
                        help="folder of downloaded .deb files, reused when present; packages "
                             "are extracted to CACHE/extracted (default: "
                             "~/.cache/audio_interaction/debs)")
  real_dev.add_argument("--streams", type=int, default=40, help="turn-taking streams to build")
  real_dev.add_argument("--seed", type=int, default=1234, help="seed of the turn-taking streams")
  # choices: real_audio.TURN_ENDS (the CLI imports the corpus lazily, to start fast)
  real_dev.add_argument("--turn-end", choices=("speech", "recording"), default="speech",
                        help="where a turn ends: its last word (Silero VAD on the clean "
                             "utterance) or, as up to session 29, its recording's -35 dB trim")
  real_dev.set_defaults(run=_build_real_dev)

  lead = verbs.add_parser(
      "lead-in", help="copy a manifest with its recordings played later in the stream (quiet "
                      "noise before each, annotations shifted): score a model away from the "
                      "start of its position window; with --channel, as heard over a phone "
                      "line, across a room or through another microphone")
  lead.add_argument("--manifest", required=True, help="the manifest (JSONL) to copy")
  lead.add_argument("--lead", required=True,
                    help="seconds of quiet before each recording (5), or random:MAX for a "
                         "seeded draw in [0, MAX) s per recording")
  lead.add_argument("--out", required=True,
                    help="folder of the copy: the manifest under its own name, audio/, "
                         "lead_in.json")
  lead.add_argument("--seed", type=int, default=0)
  lead.add_argument("--unaddressed", action="store_true",
                    help="make each recording one benign 'speech' event (after its lead): "
                         "B6 cases of speech nobody addressed to the model, where any reply "
                         "is a false alarm")
  lead.add_argument("--max-rows", type=int, default=None,
                    help="copy the manifest's first rows only")
  # choices: effects.CHANNELS (the CLI imports the corpus lazily, to start fast)
  lead.add_argument("--channel", choices=("telephone", "room", "microphone"), default=None,
                    help="play each recording through a channel too (telephone: 300-3400 Hz, "
                         "8 kHz mu-law; room: a simulated room; microphone: a random mic "
                         "response), timings unchanged")
  lead.set_defaults(run=_lead_in)

  fit_head = _head_fit_parser(
      verbs, "fit-sound-head", "fit a bundle's sound-event head (added if it has none) on "
                               "clean TRAIN-bank clips and corpus rows over its frozen "
                               "encoder; writes a new bundle")
  fit_head.add_argument("--procedural-only", action="store_true",
                        help="the generated sounds only, no recordings")
  fit_head.add_argument("--corpus", default=None,
                        help="a built corpus (build-data) whose train rows give the "
                             "'none' chunks (speech, rooms); without one the head has never "
                             "heard speech as 'none'")
  fit_head.add_argument("--corpus-rows", type=int, default=1200)
  fit_head.add_argument("--quiet-lead", type=float, default=0.0, metavar="SECONDS",
                        help="each clean clip after a quiet room of 0 to this many seconds "
                             "(labelled 'none'; default 0: the clip alone; 2 finds more "
                             "alerts anywhere in a stream, and with --read-blocks 0,1,2 "
                             "(the shipped real-audio head) fewer false ones: "
                             "docs/real_audio_log.md)")
  fit_head.add_argument("--channel-share", type=float, default=0.0, metavar="P",
                        help="share of the clean clips heard through a simulated room or "
                             "another microphone (default 0: as recorded)")
  fit_head.add_argument("--read-blocks", default=None, metavar="I,J,...",
                        help="lower encoder blocks whose chunk means the head reads beside "
                             "the final frames (model.sound_event_blocks; e.g. 0,1,2; '' for "
                             "the final frames alone; default: the bundle's). Another set "
                             "starts the head afresh")
  fit_head.add_argument("--corpus-sounds", action="store_true",
                        help="also fit the corpus rows' labelled sounds (under speech/noise)")
  fit_head.add_argument("--no-other-sounds", action="store_true",
                        help="leave out the TRAIN recordings of sounds outside the classes "
                             "(by default they join as 'none')")
  fit_head.add_argument("--per-class", type=int, default=64, help="clean clips per class")
  fit_head.add_argument("--l2", type=float, default=1e-3, help="L2 on the standardised kernel")
  fit_head.add_argument("--steps", type=int, default=300, help="L-BFGS iterations")
  fit_head.add_argument("--seed", type=int, default=0)
  fit_head.set_defaults(run=_fit_sound_head)

  fit_ctc = _head_fit_parser(
      verbs, "fit-ctc-head", "fit a bundle's encoder CTC head on the TRAIN side's recorded "
                             "lines with their text, over its frozen encoder; writes a new "
                             "bundle")
  _recorded_lines_flags(fit_ctc, sources="amazon-queen-en", held_out_share=0.05,
                        held_out_use="to choose the step", max_lines=None)
  fit_ctc.add_argument("--copies", type=int, default=1,
                       help="extra versions of each line through the corpus's effects")
  fit_ctc.add_argument("--steps", type=int, default=4000, help="Adam steps")
  fit_ctc.add_argument("--learning-rate", type=float, default=2e-3)
  fit_ctc.add_argument("--frames-per-batch", type=int, default=16384)
  fit_ctc.add_argument("--eval-every", type=int, default=250)
  fit_ctc.add_argument("--warm-start", action="store_true",
                       help="start from the bundle's own head instead of zeros")
  fit_ctc.add_argument("--monitor", default=None,
                       help="a manifest whose greedy CTC WER is logged at each evaluation "
                            "(it does not choose the step)")
  fit_ctc.add_argument("--targets", choices=("tokens", "characters"), default=None,
                       help="what the head writes: the tokenizer's pieces, or words spelled "
                            "one character at a time (default: the bundle's data.ctc_targets)")
  fit_ctc.add_argument("--features-cache", default=None,
                       help="a folder keeping the encoded lines, so a second fit of the same "
                            "bundle on the same lines skips the encoding")
  fit_ctc.add_argument("--seed", type=int, default=0)
  fit_ctc.set_defaults(run=_fit_ctc_head)

  fit_turn = _head_fit_parser(
      verbs, "fit-turn-head", "fit a turn-end head (added if the bundle has none) on the "
                              "TRAIN side's recorded sentences, cut at a pause and whole, "
                              "over its frozen encoder; writes a new bundle whose hybrid "
                              "policy reads it")
  _recorded_lines_flags(fit_turn, sources="amazon-queen-en,fillets-cs", held_out_share=0.2,
                        held_out_use="to measure the fit (ROC AUC)", max_lines=1500)
  fit_turn.add_argument("--chunks", type=int, default=2,
                        help="chunks after the speech read per example")
  fit_turn.add_argument("--speech-chunks", type=int, default=0,
                        help="chunks inside each whole sentence's speech taken as turns "
                             "that go on")
  fit_turn.add_argument("--second-parts", action="store_true",
                        help="also each sentence's part after its pause, alone, as a turn "
                             "that has ended (a short turn ends too)")
  fit_turn.add_argument("--sound-clips", type=int, default=0,
                        help="clips per class of the TRAIN sound bank whose following silence "
                             "is taken as no turn's end")
  fit_turn.add_argument("--features", choices=("encoder", "prosody"), default="encoder",
                        help="what the turn-end model reads per chunk: the encoder's mean "
                             "frame (a head in the network), or the pitch and level of the "
                             "speech before the chunk (a 14-feature model in the bundle's "
                             "infer block; the network is unchanged)")
  fit_turn.add_argument("--hybrid-gate", type=float, default=0.0,
                        help="with --features prosody: the P(SPEAK) a reply also needs "
                             "(the model says whether, prosody when; 0: no gate)")
  fit_turn.add_argument("--effects-share", type=float, default=0.5,
                        help="share of the examples played through the corpus's per-utterance "
                             "effects first (rooms, microphones, telephone, noise, speed)")
  fit_turn.add_argument("--l2", type=float, default=1e-2, help="L2 on the standardised kernel")
  fit_turn.add_argument("--steps", type=int, default=300, help="L-BFGS iterations")
  fit_turn.add_argument("--seed", type=int, default=0)
  fit_turn.set_defaults(run=_fit_turn_head)

  fit_decision = _head_fit_parser(
      verbs, "fit-decision-head", "refit the decoder's decision head (P(SPEAK)) over its "
                                  "frozen hidden states on the TRAIN side's recorded "
                                  "sentences, each under a chat and a monitoring instruction: "
                                  "answer a finished turn, not a pause, not speech nobody "
                                  "asked about; writes a new bundle", clip_positions=False)
  _recorded_lines_flags(fit_decision, sources="amazon-queen-en,fillets-cs", held_out_share=0.2,
                        held_out_use="to measure the fit (ROC AUC)", max_lines=800)
  fit_decision.add_argument("--after-seconds", type=float, default=1.0,
                            help="the chunks within this long after the speech are examples")
  fit_decision.add_argument("--speech-chunks", type=int, default=2,
                            help="chunks inside each whole sentence's speech taken as SILENT")
  fit_decision.add_argument("--max-lead-seconds", type=float, default=30.0,
                            help="the longest quiet room streamed before a sentence (the head "
                                 "then serves a turn anywhere in Whisper's 30 s window)")
  fit_decision.add_argument("--l2", type=float, default=1e-2,
                            help="L2 on the standardised kernel")
  fit_decision.add_argument("--steps", type=int, default=300, help="L-BFGS iterations")
  fit_decision.add_argument("--seed", type=int, default=0)
  fit_decision.set_defaults(run=_fit_decision_head)

  pin = verbs.add_parser(
      "pin-instruction",
      help="copy a bundle with its instruction pinned in the decoder's view (an attention "
           "sink: `model.decoder.pinned_prefix`), so a long session still reads it")
  pin.add_argument("--bundle", required=True, help=BUNDLE_HELP)
  pin.add_argument("--out", required=True, help="the new bundle's directory")
  pin.add_argument("--pinned-prefix", type=int, required=True,
                   help="positions at the stream's start kept in view (the prompt: "
                        "<bos> <online> <sys> instruction </sys>)")
  pin.add_argument("--window", type=int, default=None,
                   help="the decoder's attention window (default: kept); e.g. the length of "
                        "the rows it was trained on (data.max_len)")
  pin.set_defaults(run=_pin_instruction)

  train_audio = verbs.add_parser(
      "fetch-train-audio",
      help="the TRAIN-side real recordings (Debian packages) for `data.randomize.train_audio_root`")
  train_audio.add_argument("--cache", default=None,
                           help="folder of downloaded .deb files, reused when present; packages "
                                "are extracted to CACHE/extracted (default: "
                                "~/.cache/audio_interaction/debs)")
  train_audio.set_defaults(run=_fetch_train_audio)

  label = verbs.add_parser(
      "label-train-speech",
      help="Whisper tiny.en's transcripts (pseudo-labels) of the TRAIN side's English voices")
  label.add_argument("--source", choices=config_lib.ENGLISH_SPEECH_SOURCES,
                     default="hedgewars-en",
                     help="hedgewars-data's voice packs (531 clips, ~7 min) or Flight of the "
                          "Amazon Queen's spoken lines (6,745 clips, ~30 min)")
  label.add_argument("--config", default=str(config_lib.experiments_dir() / "whisper_tiny.py"),
                     help="a Whisper-encoder config (Whisper's log-mel front end)")
  label.add_argument("--root", default=None,
                     help="extracted TRAIN packages (default: fetch-train-audio's)")
  label.add_argument("--out", default=None,
                     help="JSONL to write (default: the one the corpus reads, "
                          "audio_interaction/corpus/<source>.jsonl, e.g. hedgewars_en.jsonl)")
  label.add_argument("--batch", type=int, default=8)
  label.set_defaults(run=_label_train_speech)

  def _serve(args: argparse.Namespace, overrides: list[str]) -> int:
    infer = _infer_config("serve", args.checkpoint, overrides)
    from audio_interaction.apps import serve as serve_app
    return serve_app.main_args(args, infer)

  serve = verbs.add_parser("serve", help="many live streams over websockets + a page for the "
                                         "microphone (docs/serve_protocol.md)")
  serve.add_argument("--host", default="127.0.0.1",
                     help="address to bind; anything but loopback requires a token")
  serve.add_argument("--port", type=int, default=8765, help="0: any free port (printed)")
  serve.add_argument("--token", default=None,
                     help="token clients must send (generated and printed when --host "
                          "exposes the server and none is given)")
  serve.add_argument("--checkpoint", default=None,
                     help=BUNDLE_HELP)
  serve.add_argument("--threshold", type=_probability, default=None,
                     help="default P(SPEAK) threshold (clients may set their own in [0, 1])")
  serve.add_argument("--slots", type=int, default=8,
                     help="streams stepped together in one batch (compiled once)")
  serve.add_argument("--max-connections", type=int, default=16)
  serve.add_argument("--max-message-bytes", type=int, default=128 * 1024,
                     help="larger messages close the connection (code 1009)")
  serve.add_argument("--max-speed", type=_positive, default=2.0,
                     help="audio faster than this x real time is dropped and counted")
  serve.add_argument("--flood-seconds", type=_positive, default=10.0,
                     help="dropped audio (s) after which a client is closed (code 1008)")
  serve.add_argument("--stall-timeout", type=_positive, default=2.0,
                     help="seconds without audio before a stall event")
  serve.add_argument("--allow-origin", action="append", default=None,
                     help="another browser origin allowed to connect (repeatable)")
  serve.add_argument("--log-dir", default="runs/serve",
                     help="one JSONL event log per connection ('' for none)")
  serve.set_defaults(run=_serve)
  return parser


def _one_line(error: BaseException) -> str:
  """An error's message on one line (a KeyError's without the quotes str() adds)."""
  message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  return "; ".join(lines) or type(error).__name__


def _known(error: BaseException) -> bool:
  """Errors that explain themselves: shown as one line instead of a traceback."""
  if isinstance(error, (UsageError, FileNotFoundError, KeyError, ValueError)):
    return True  # audio.io.AudioError is a ValueError
  sources = sys.modules.get("audio_interaction.infer.sources")  # loaded if it raised
  return sources is not None and isinstance(error, sources.SourceUnavailable)


def main(argv: list[str] | None = None) -> int:
  if argv is None:  # run as a program (not called from Python): use tcmalloc
    try:
      cpu_host.reexec_under_tcmalloc()
    except ValueError as error:
      print(f"audio-interaction: error: {error}", file=sys.stderr)
      return 2
  argv = list(sys.argv[1:] if argv is None else argv)
  # `--config.a.b=value` overrides are ours, not argparse's.
  overrides = [a for a in argv if a.startswith("--config.")]
  try:
    args = build_parser().parse_args([a for a in argv if not a.startswith("--config.")])
  except SystemExit as done:  # a usage error (one line already printed) or --help
    return int(done.code or 0)
  try:
    return args.run(args, overrides)
  except Exception as error:
    if not _known(error):
      raise
    print(f"audio-interaction {args.verb}: error: {_one_line(error)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
