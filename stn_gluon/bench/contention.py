"""``stn-gluon bench contention``: training and serving speed on a machine that other processes want too.

Measured in one run, for each thread setting in :data:`SETTINGS` (the
default, and the alternatives tried for issue 19):

- training images/s of the real ``fit`` loop (``fit_train``), a plain user
  Gluon loop (``gluon_user_loop``: ``import mxnet`` first, then
  ``stn_gluon``, ``OMP_NUM_THREADS`` as the user left it), and PyTorch eager
  (its own defaults, as many threads as cores), each in a worker process of
  its own (:mod:`stn_gluon.bench.harness`). The default setting's ``fit``
  workers start as ``stn-gluon train`` does: their thread count chosen before
  MXNet loads by :func:`stn_gluon.cli.threads.prepare_threads`, from the
  load they start into; so it is also started afresh in each situation;
- serving requests/s of ``stn-gluon serve`` (MXNet and ONNX Runtime
  backends), 32 concurrent keep-alive clients in this process
  (:mod:`stn_gluon.bench.processes`);

in four situations: quiet, beside one busy process, beside two, and (training)
two trainings of the same kind at once. Each round times every worker once in
every situation, in turns; a figure is the median over rounds, a ratio the
median of the per-round ratios to the same worker's quiet figure of that
round. Busy processes are started by the bench, end on their own after a
time limit, and are ended with everything else on the way out (also on
Ctrl-C, SIGTERM or an error).
"""
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .._runtime.threads import CHOSEN_ENV, physical_cores
from ..train.reporting import machine_info
from .competitors import exported_model
from .harness import Isolated, child_environ
from .torch_peer import have_torch
from .processes import Children, busy_command, load, on_sigterm_raise, png_payloads, run_async, start_server

__all__ = ["SETTINGS", "SITUATIONS", "median_ratios", "contention_report", "contention_lines", "settings_env",
           "summarise"]

#: Thread settings compared: name -> environment of the worker (``None``: removed; ``"{cores}"``: the core count).
#: The count stn-gluon chose for this (the bench's) process is none of the workers' (CHOSEN_ENV removed).
SETTINGS: Dict[str, Dict[str, Optional[str]]] = {
    "new default": {"OMP_NUM_THREADS": None, "GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, CHOSEN_ENV: None},
    "old default": {"OMP_NUM_THREADS": "{cores}", "GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": None,
                    CHOSEN_ENV: None},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, CHOSEN_ENV: None},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": "{cores}", "GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE",
                                CHOSEN_ENV: None},
}
#: The settings whose servers are measured, per backend (ONNX Runtime has no OpenMP; the spin variants are
#: about training).
SERVING_SETTINGS = {"mxnet": ("new default", "old default", "OMP_NUM_THREADS=1"),
                    "onnxruntime": ("new default", "old default")}
#: The settings of ``--quick``.
QUICK_SETTINGS = ("new default", "old default")
#: Situations: how many busy processes run beside the measured one (``pair``: two trainings at once).
SITUATIONS = {"quiet": 0, "1 busy": 1, "2 busy": 2}
PAIR = "two trainings"
#: The setting whose ``fit`` workers start as ``stn-gluon train`` does (the count chosen from the load at start).
ADAPTIVE = "new default"
#: The adaptive default's ``fit`` worker started on the quiet machine and kept through every situation.
STARTED_QUIET = "new default, started quiet"
#: The training workloads (kind of :data:`stn_gluon.bench.competitors.FACTORIES`, started as a user script?).
WORKLOADS = {"fit": ("fit_train", False), "user loop": ("gluon_user_loop", True)}
TORCH = "pytorch eager"
#: Seconds between a situation's start (busy processes started or ended) and its first timed window.
SETTLE_S = 1.5
#: Seconds each worker runs untimed before its window.
WORKER_SETTLE_S = 1.0


def settings_env(name: str, cores: int) -> Dict[str, Optional[str]]:
    """The environment changes of setting ``name``, ``{cores}`` filled in."""
    return {k: (v.format(cores=cores) if v is not None else None) for k, v in SETTINGS[name].items()}


def median_ratios(rounds: Dict[str, List[float]], base: str = "quiet") -> Dict[str, Optional[float]]:
    """Median over rounds of each situation's rate / the ``base`` situation's rate in the same round.

    ``rounds``: ``{situation: [rate per round]}``; a round with a missing or
    zero base is left out; ``None`` where no round has both.
    """
    out: Dict[str, Optional[float]] = {}
    quiet = rounds.get(base, [])
    for name, rates in rounds.items():
        pairs = [r / q for r, q in zip(rates, quiet) if q and r is not None]
        out[name] = float(np.median(pairs)) if pairs else None
    return out


def _median(values: List[float]) -> Optional[float]:
    return float(np.median(values)) if values else None


class _Busy:
    """``count`` busy processes for the length of a ``with`` block (bounded by ``limit_s`` each)."""

    def __init__(self, children: Children, count: int, limit_s: float, settle_s: float):
        self.children, self.count, self.limit_s, self.settle_s = children, count, limit_s, settle_s
        self.procs: list = []

    def __enter__(self) -> "_Busy":
        self.procs = [self.children.start(busy_command(self.limit_s)) for _ in range(self.count)]
        # time the steady state, not the switch
        time.sleep(self.settle_s)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            self.children.stop(proc)


def _start_workers(children: Children, specs: Dict[tuple, tuple]) -> Dict[tuple, tuple]:
    """Start the workers ``{key: (kind, kwargs, plain, env, cli_slots)}`` at once; wait until each is built and
    warm (``cli_slots``: see :class:`~stn_gluon.bench.harness.Isolated`).

    Returns ``{key: (Isolated, ready info)}``. CLI-started workers that share a
    slot folder count each other as trainings sharing the cores (two trainings
    launched at once).
    """
    started = {key: Isolated(kind, kwargs, plain, env=env, cli_slots=slots)
               for key, (kind, kwargs, plain, env, slots) in specs.items()}
    for worker in started.values():  # the processes end with the bench (their stdin closes) or through children
        children.adopt(worker.process)
    out = {}
    for key, worker in started.items():
        out[key] = (worker, worker.ready())
    for key, (worker, _) in out.items():
        batch = specs[key][1]["batch"]
        worker(batch, 0.0, 3)  # warm-up
    return out


def _train_workers(children: Children, settings: List[str], cores: int, batch: int, torch: bool,
                   slots: str) -> Dict[tuple, tuple]:
    """The workers that live through the whole bench: ``{(setting, workload): (Isolated, ready info)}``, twins for
    the two-trainings case, the torch peer.

    Started one at a time on the quiet machine, so that none sees another's
    start-up as load; the adaptive default's ``fit`` worker is
    :data:`STARTED_QUIET` (a training that started alone and got neighbours
    later), each CLI-started one with a slot folder of its own under
    ``slots`` (they are not meant to run at once). PyTorch runs with its own
    defaults: no ``OMP_NUM_THREADS`` and no spin settings.
    """
    specs: Dict[tuple, tuple] = {}
    for s in settings:
        env = settings_env(s, cores)
        for w, (kind, plain) in WORKLOADS.items():
            cli = s == ADAPTIVE and w == "fit"
            name = STARTED_QUIET if cli else s
            specs[(name, w)] = (kind, dict(batch=batch), plain, env, f"{slots}/quiet" if cli else None)
            if w == "fit":
                specs[(name, w, "twin")] = (kind, dict(batch=batch), plain, env, f"{slots}/twin" if cli else None)
    if torch:
        specs[("pytorch defaults", TORCH)] = ("torch_train", dict(batch=batch), False,
                                              {k: None for k in SETTINGS[ADAPTIVE]}, None)
    workers: Dict[tuple, tuple] = {}
    for key, spec in specs.items():
        workers.update(_start_workers(children, {key: spec}))
    return workers


def _time_together(pair: List[Isolated], batch: int, seconds: float) -> float:
    """Time ``pair`` in the same window; the slower one's rate ("each trains at least this fast")."""
    for w in pair:
        w.ask_rate(batch, SETTLE_S, 0)  # both start
    for w in pair:
        w.answer()
    for w in pair:
        w.ask_rate(batch, seconds, 0)
    return float(min(w.answer() for w in pair))


def _measure_training(children: Children, workers: Dict[tuple, tuple], batch: int, seconds: float, rounds: int,
                      busy_limit: float, cores: int, echo: Callable[[str], None], slots: str) -> dict:
    """Every long-lived worker in every situation, and the adaptive default's ``fit`` started afresh in each.

    The fresh worker (:data:`ADAPTIVE`, ``fit``) starts once the situation's
    busy processes run, so it chooses its threads from that load as a user's
    ``stn-gluon train`` started then would; for the two-trainings case two
    start at the same moment on the otherwise quiet machine, as two trainings
    that count each other (one slot folder).
    """
    fresh_key = (ADAPTIVE, "fit")
    fresh_spec = ("fit_train", dict(batch=batch), False, settings_env(ADAPTIVE, cores), f"{slots}/fresh")
    keys = [k for k in workers if len(k) == 2]
    rates: Dict[tuple, Dict[str, List[float]]] = {k: {s: [] for s in list(SITUATIONS) + [PAIR]}
                                                  for k in [fresh_key] + keys}
    chosen: Dict[str, List[int]] = {s: [] for s in list(SITUATIONS) + [PAIR]}
    ready = {k: info for k, (_, info) in workers.items()}
    for r in range(rounds):
        echo(f"training, round {r + 1}/{rounds}")
        for situation, busy in SITUATIONS.items():
            with _Busy(children, busy, busy_limit, SETTLE_S):
                (fresh, info), = _start_workers(children, {fresh_key: fresh_spec}).values()
                chosen[situation].append(info["threads"]["threads_now"])
                ready[fresh_key] = info
                timed = {fresh_key: fresh, **{k: workers[k][0] for k in keys}}
                for k, worker in timed.items():
                    worker(batch, WORKER_SETTLE_S, 0)  # settle
                    rates[k][situation].append(worker(batch, seconds, 0))
                fresh.close()
        pair = _start_workers(children, {(ADAPTIVE, i): fresh_spec[:4] + (f"{slots}/pair{r}",) for i in range(2)})
        chosen[PAIR].extend(info["threads"]["threads_now"] for _, info in pair.values())
        rates[fresh_key][PAIR].append(_time_together([w for w, _ in pair.values()], batch, seconds))
        for w, _ in pair.values():
            w.close()
        for k in keys:
            twin = workers.get(k + ("twin",))
            if twin is not None:
                rates[k][PAIR].append(_time_together([workers[k][0], twin[0]], batch, seconds))
    return dict(rates=rates, ready=ready, chosen=chosen)


def _measure_serving(children: Children, settings: List[str], cores: int, seconds: float, rounds: int,
                     busy_limit: float, clients: int, echo: Callable[[str], None]) -> dict:
    payloads = png_payloads(200)
    out: Dict[tuple, Dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prefix, onnx_path = exported_model(tmp)
        servers = {}
        for s in settings:
            for backend, model in (("mxnet", prefix), ("onnxruntime", onnx_path)):
                if s not in SERVING_SETTINGS[backend]:
                    continue
                env = child_environ(settings_env(s, cores))
                proc, port = start_server(children, model, backend, env=env)
                servers[(s, backend)] = port
                run_async(load(port, payloads, 300, clients, 10))  # warm-up
                out[(s, backend)] = {sit: [] for sit in SITUATIONS}
        for r in range(rounds):
            echo(f"serving, round {r + 1}/{rounds}")
            for situation, busy in SITUATIONS.items():
                with _Busy(children, busy, busy_limit, SETTLE_S):
                    for key, port in servers.items():
                        run_async(load(port, payloads, 10 ** 6, clients, WORKER_SETTLE_S))  # settle
                        out[key][situation].append(run_async(load(port, payloads, 10 ** 6, clients, seconds)))
    return out


def contention_report(quick: bool = False, rounds: Optional[int] = None, seconds: Optional[float] = None,
                      batch: int = 64, clients: int = 32, serving: bool = True,
                      echo: Callable[[str], None] = print) -> tuple:
    """Run the contention benchmark; returns ``(markdown lines, JSON-able results)``.

    quick: two settings, one short round (a smoke test, not a measurement).
    """
    rounds = rounds or (1 if quick else 3)
    seconds = seconds or (0.5 if quick else 1.5)
    settings = list(QUICK_SETTINGS if quick else SETTINGS)
    cores = physical_cores()
    busy_limit = 600.0  # no busy process outlives a killed bench by more than this
    tic = time.monotonic()
    with on_sigterm_raise(), Children() as children, tempfile.TemporaryDirectory() as slots:
        workers = _train_workers(children, settings, cores, batch, have_torch(), slots)
        try:
            train = _measure_training(children, workers, batch, seconds, rounds, busy_limit, cores, echo, slots)
        finally:
            for w, _ in workers.values():
                w.close()
        serve = (_measure_serving(children, settings, cores, seconds, rounds, busy_limit, clients, echo)
                 if serving else {})
    res = summarise(train, serve, settings, dict(rounds=rounds, seconds=seconds, batch=batch, clients=clients,
                                                  quick=quick, cores=cores, wall_s=time.monotonic() - tic))
    return contention_lines(res), res


def summarise(train: dict, serve: dict, settings: List[str], run: dict) -> dict:
    """The results: figures, ratios to quiet, against PyTorch, issue 19's targets.

    train: ``{"rates": {(setting, workload): {situation: [rate per round]}},
    "ready": {key: worker settings}}``; serve: ``{(setting, backend):
    {situation: [load result per round]}}`` (see :func:`stn_gluon.bench.processes.load`).
    """
    training = {}
    torch_key = ("pytorch defaults", TORCH)
    torch_rounds = train["rates"].get(torch_key)
    for key, rounds in train["rates"].items():
        entry: Dict[str, Any] = dict(setting=key[0], workload=key[1],
                                     rate={s: _median(v) for s, v in rounds.items() if v},
                                     ratio={s: v for s, v in median_ratios(rounds).items() if s != "quiet"},
                                     rounds=rounds, threads=train["ready"][key].get("threads"))
        if torch_rounds and key != torch_key:
            entry["vs_torch"] = {s: _median([a / b for a, b in zip(rounds[s], torch_rounds[s]) if b])
                                 for s in SITUATIONS if rounds[s] and torch_rounds[s]}
        if key == (ADAPTIVE, "fit") and train.get("chosen"):
            entry["threads_chosen"] = train["chosen"]
        training[f"{key[0]} | {key[1]}"] = entry
    serving = {}
    for (setting, backend), per in serve.items():
        thr = {s: [r["throughput"] for r in runs] for s, runs in per.items()}
        serving[f"{setting} | {backend}"] = dict(
            setting=setting, backend=backend, rate={s: _median(v) for s, v in thr.items() if v},
            ratio={s: v for s, v in median_ratios(thr).items() if s != "quiet"},
            errors={s: sum(r["errors"] for r in runs) for s, runs in per.items()},
            error_samples=[e for runs in per.values() for r in runs for e in r["error_samples"]][:5],
            p99_ms={s: _median([r["p99_ms"] for r in runs]) for s, runs in per.items()})
    return dict(training=training, serving=serving, run=run,
                settings={s: settings_env(s, run["cores"]) for s in settings},
                targets=_targets(training, serving))


def _targets(training: dict, serving: dict) -> List[dict]:
    """Issue 19's targets, each with the figure measured and whether it is met."""
    out = []

    def add(what: str, value: Optional[float], goal: float, higher: bool = True) -> None:
        met = None if value is None else (value >= goal if higher else value <= goal)
        out.append(dict(target=what, value=value, goal=goal, met=met))
    fit, old = training.get("new default | fit"), training.get("old default | fit")
    if fit:
        add("fit, 1 busy / quiet >= 0.55", fit["ratio"].get("1 busy"), 0.55)
        add("fit, 1 busy / PyTorch eager (1 busy) >= 1.5", fit.get("vs_torch", {}).get("1 busy"), 1.5)
        add("fit, two trainings at once, each / quiet >= 0.35", fit["ratio"].get(PAIR), 0.35)
        if old:
            q = [a / b for a, b in zip(fit["rounds"]["quiet"], old["rounds"]["quiet"]) if b]
            add("fit quiet, new / old default >= 0.95", _median(q), 0.95)
    for backend in ("mxnet", "onnxruntime"):
        s = serving.get(f"new default | {backend}")
        if s:
            add(f"serving ({backend}), 1 busy / quiet >= 0.5", s["ratio"].get("1 busy"), 0.5)
            add(f"serving ({backend}), errors with 1 busy == 0", float(s["errors"].get("1 busy", 0)), 0.0,
                higher=False)
    return out


def _r(v: Optional[float]) -> str:
    return f"{v:,.0f}" if v else "n/a"


def _x(v: Optional[float]) -> str:
    return f"{v:.2f}x" if v is not None else "n/a"


def contention_lines(res: dict) -> List[str]:
    """The Markdown report of :func:`contention_report`'s results."""
    run, info = res["run"], machine_info()
    sits = list(SITUATIONS) + [PAIR]
    lines = [f"Machine: {info['cpu_count']} logical CPUs ({run['cores']} cores, {info['processor']}), "
             f"MXNet {info['mxnet']}. {run['rounds']} rounds of {run['seconds']:g} s windows"
             f"{' (--quick: a smoke test, not a measurement)' if run['quick'] else ''}; figures are medians over "
             "rounds, ratios medians of the per-round ratios to the same worker's quiet figure. "
             f"Busy process: `python -c 'while True: pass'`. Took {run['wall_s'] / 60:.1f} min.", "",
             f"### Training (images/s, batch {run['batch']})", "",
             "| setting | loop | " + " | ".join(sits) + " | " + " | ".join(f"{s} / quiet" for s in sits[1:])
             + " | / PyTorch (1 busy) |",
             "|---|---|" + "---|" * (2 * len(sits))]
    for e in res["training"].values():
        lines.append(f"| {e['setting']} | {e['workload']} | " + " | ".join(_r(e["rate"].get(s)) for s in sits)
                     + " | " + " | ".join(_x(e["ratio"].get(s)) for s in sits[1:])
                     + f" | {_x(e.get('vs_torch', {}).get('1 busy'))} |")
    lines += ["", f"`{PAIR}`: two `fit` workers of the same setting timed at the same time (the slower one's rate). "
              f"**{ADAPTIVE}** `fit` is started afresh in each situation, once its busy processes run (for "
              f"`{PAIR}`: two started at the same moment), and chooses its threads before MXNet loads as a "
              f"`stn-gluon train` started then would; **{STARTED_QUIET}** started on the quiet machine and kept "
              "its threads when the load came; the other settings' workers start once, one at a time, on the "
              "quiet machine. PyTorch runs with its own defaults (no OpenMP variables)."]
    chosen = res["training"].get(f"{ADAPTIVE} | fit", {}).get("threads_chosen")
    if chosen:
        lines += ["", f"Threads {ADAPTIVE} chose at start-up (per round): "
                  + "; ".join(f"{s}: {', '.join(str(c) for c in counts)}" for s, counts in chosen.items() if counts)
                  + "."]
    lines += [""]
    if res["serving"]:
        ssits = list(SITUATIONS)
        lines += [f"### Serving (requests/s, {run['clients']} concurrent clients, one PNG digit each)", "",
                  "| setting | backend | " + " | ".join(ssits) + " | " + " | ".join(f"{s} / quiet" for s in ssits[1:])
                  + " | errors | p99 1 busy (ms) |",
                  "|---|---|" + "---|" * (2 * len(ssits) + 1)]
        for e in res["serving"].values():
            lines.append(f"| {e['setting']} | {e['backend']} | " + " | ".join(_r(e["rate"].get(s)) for s in ssits)
                         + " | " + " | ".join(_x(e["ratio"].get(s)) for s in ssits[1:])
                         + f" | {sum(e['errors'].values())} | {e['p99_ms'].get('1 busy') or 0:.0f} |")
    lines += ["", "### Issue 19's targets (new default)", "", "| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['target']} | {value} | {met} |")
    lines += ["", "Settings: " + "; ".join(f"**{k}**: " + (", ".join(f"{a}={b}" if b is not None else f"{a} unset"
                                                                       for a, b in v.items() if a != CHOSEN_ENV))
                                         for k, v in res["settings"].items()) + "."]
    return lines
