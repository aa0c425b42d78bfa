"""Kill and concurrency campaigns (issue 17): outputs are a set, published whole or not at all.

Kill campaign: for `fix`, `calibrate`, `quantize` and `build`, a folder holds the previous
complete set of outputs (generation "old"); a run that would write generation "new" is sent
SIGKILL, SIGINT or SIGTERM after a random delay (0 to 1.2x its usual run time, so some
signals land during the last write and some after the end). Afterwards every output file
must belong to one generation (old or new, never a mixture, never torn), and the next run
must leave the new set, no temp file, and never call foreign bytes "up to date".

Concurrency campaign: 2-4 runs with different inputs write one output at the same time;
afterwards the set must be one run's whole set, and a re-run of each input must either
recompute or serve exactly that input's bytes.

    nice python benchmarks/fuzz_campaign.py --kills 26 --rounds 10

Prints the counts as a markdown table (see benchmarks/results/fuzz.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import conv_relu_model  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(folder: Path, generations: int = 4) -> None:
    """Models m0..m3 (m1 lacks the dead branch: a different node count), data d0..d3, caches."""
    for g in range(generations):
        model = conv_relu_model(seed=g)
        if g % 2 == 1:
            del model.graph.node[3]  # the dead Sigmoid branch
        onnx.save(model, str(folder / f"m{g}.onnx"))
        rng = np.random.default_rng(g)
        np.save(folder / f"d{g}.npy", (rng.random((4, 3, 8, 8)) * (g + 1)).astype(np.float32))


def _cli(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "onnx2trt_lib.cli.main", *args]


# per command: argv for generation g, and the output files of a set
COMMANDS = {
    "fix": (
        lambda g: ["fix", f"m{g}.onnx", "-o", "out.onnx", "--report", "report.json"],
        ["out.onnx", "report.json"],
    ),
    "calibrate": (
        lambda g: [
            "calibrate",
            "m0.onnx",
            "--data",
            f"d{g}.npy",
            "-o",
            "c.cache",
            "--ranges",
            "r.json",
        ],
        ["c.cache", "c.cache.calib.json", "r.json"],
    ),
    "quantize": (
        lambda g: ["quantize", "m0.onnx", "--cache", f"c{g}.cache", "--no-protect", "-o", "q.onnx"],
        ["q.onnx"],
    ),
    "build": (
        lambda g: [
            "build",
            f"m{g}.onnx",
            "-o",
            "e.engine",
            "--backend",
            "tensorrt-rtx",
            "--no-engine-cache",
        ],
        ["e.engine", "e.engine.json"],
    ),
}


def _run(folder: Path, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli(folder, *argv), cwd=folder, env=ENV, capture_output=True, text=True, timeout=timeout
    )


class Generations:
    """Reference outputs of each generation, and which generation a file on disk belongs to."""

    def __init__(self, base: Path, command: str, count: int) -> None:
        self.command = command
        self.files: dict[int, dict[str, str]] = {}
        self.seconds: dict[int, float] = {}
        make, outputs = COMMANDS[command]
        for g in range(count):
            folder = base / f"ref-{command}-{g}"
            if folder.exists():  # the kill campaign made the first two
                self._record(folder, g, outputs)
                continue
            shutil.copytree(base / "inputs", folder)
            start = time.perf_counter()
            done = _run(folder, make(g))
            self.seconds[g] = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"reference {command} {g} failed: {done.stderr}")
            self._record(folder, g, outputs)

    def _record(self, folder: Path, g: int, outputs: list[str]) -> None:
        self.files[g] = {name: self._identity(folder, name) for name in outputs}
        self.seconds.setdefault(g, 1.0)

    def _identity(self, folder: Path, name: str) -> str:
        """What identifies a generation in a file: its bytes, except where a run writes times
        (fix's report: the model's node count) or a build differs run to run (engine: the ONNX
        it names; the engine must match the sidecar's sha256 besides)."""
        path = folder / name
        if name == "report.json":
            return f"nodes_before={json.loads(path.read_text())['nodes_before']}"
        if name == "e.engine.json":
            return f"onnx={json.loads(path.read_text())['onnx_sha256']}"
        if name == "e.engine":
            side = json.loads((folder / "e.engine.json").read_text())
            ok = side.get("engine_sha256") == _sha(path)
            return f"onnx={side['onnx_sha256']}" if ok else "engine-not-its-sidecar"
        return _sha(path)

    def classify(self, folder: Path) -> str:
        """'old'/'new'-style generation number, 'none' (no outputs) or 'MIXED'/'TORN'."""
        outputs = COMMANDS[self.command][1]
        present = [n for n in outputs if (folder / n).exists()]
        if not present:
            return "none"
        if len(present) != len(outputs):
            return "MIXED"
        try:
            seen = {n: self._identity(folder, n) for n in outputs}
        except (ValueError, KeyError, OSError):
            return "TORN"
        for g, files in self.files.items():
            if all(seen[n] == files[n] for n in outputs):
                return str(g)
        return "MIXED"


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def kill_campaign(base: Path, command: str, kills: int, rng: random.Random) -> dict:
    refs = Generations(base, command, 2)
    make, outputs = COMMANDS[command]
    counts = {
        "kills": 0,
        "finished_first": 0,
        "old": 0,
        "new": 0,
        "bad": 0,
        "temps_after_kill": 0,
        "temps_after_next": 0,
        "next_not_new": 0,
        "by_signal": {},
    }
    for trial in range(kills):
        folder = base / f"kill-{command}-{trial}"
        shutil.copytree(base / "inputs", folder)
        for name in outputs:  # the previous complete set
            shutil.copy2(base / f"ref-{command}-0" / name, folder / name)
        sig = rng.choice(SIGNALS)
        delay = rng.uniform(0.0, 1.2 * refs.seconds[1])
        proc = subprocess.Popen(
            _cli(folder, *make(1)),
            cwd=folder,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(sig)
        proc.communicate(timeout=300)
        counts["kills"] += 1
        counts["finished_first"] += finished
        state = refs.classify(folder)
        label = {"0": "old", "1": "new"}.get(state)
        counts[label or "bad"] += 1
        if label is None:
            print(
                f"  {command} trial {trial}: {state} after {sig.name} at {delay:.2f}s", flush=True
            )
        key = signal.Signals(sig).name
        counts["by_signal"][key] = counts["by_signal"].get(key, 0) + 1
        counts["temps_after_kill"] += bool(_temps(folder))
        done = _run(folder, make(1))
        if done.returncode != 0 or refs.classify(folder) != "1":
            counts["next_not_new"] += 1
            print(
                f"  {command} trial {trial}: next run left {refs.classify(folder)}: {done.stderr[-300:]}"
            )
        counts["temps_after_next"] += bool(_temps(folder))
        shutil.rmtree(folder)
    return counts


def _journals(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".onnx2trt-set.")]


HOOK = ROOT / "benchmarks" / "_publish_hook.py"
# what a process that comes next does first (check_output_path, a cache hit, `run`): finish a
# set that a killed publisher left half-renamed
# (a library without journals, e.g. main's before them, has nothing to finish: the disk as is)
RECOVER = (
    "import sys\n"
    "try:\n    from onnx2trt_lib._io import recover_output_sets\n"
    "except ImportError:\n    sys.exit(0)\n"
    "recover_output_sets(sys.argv[1])"
)


def publish_campaign(base: Path, command: str, kills: int, rng: random.Random) -> dict:
    """Signals sent at marks of the publish (see _publish_hook.py): while the last output's temp
    is written, before the first rename, and after each rename (between two renames of one
    set). Classified twice: on disk right after the kill, and as the next process sees it."""
    refs = Generations(base, command, 2)
    make, outputs = COMMANDS[command]
    marks = [f"write-{len(outputs) - 1}", "before-0"] + [f"after-{i}" for i in range(len(outputs))]
    counts = {
        "kills": 0,
        "finished_first": 0,
        "mixed_on_disk": 0,
        "old": 0,
        "new": 0,
        "bad": 0,
        "temps_after_next": 0,
        "journals_after_next": 0,
        "next_not_new": 0,
        "by_mark": {},
        "by_signal": {},
    }
    for trial in range(kills):
        folder = base / f"pub-{command}-{trial}"
        shutil.copytree(base / "inputs", folder)
        for name in outputs:  # the previous complete set
            shutil.copy2(base / f"ref-{command}-0" / name, folder / name)
        mark = rng.choice(marks)
        sig = signal.SIGKILL if rng.random() < 0.8 else rng.choice(SIGNALS[1:])
        with tempfile.TemporaryDirectory(prefix="o2t-marks-") as marks_dir:
            env = {
                **ENV,
                "O2T_HOOK_OUTPUTS": ",".join(outputs),
                "O2T_HOOK_MARKS": marks_dir,
            }
            proc = subprocess.Popen(
                [sys.executable, str(HOOK), *make(1)],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.time() + 300
            while not (Path(marks_dir) / mark).exists() and proc.poll() is None:
                if time.time() > deadline:
                    break
                time.sleep(0.005)
            finished = proc.poll() is not None
            if not finished:
                proc.send_signal(sig)
            proc.communicate(timeout=300)
        counts["kills"] += 1
        counts["finished_first"] += finished
        key = f"{mark} {signal.Signals(sig).name}"
        counts["by_mark"][mark] = counts["by_mark"].get(mark, 0) + 1
        counts["by_signal"][signal.Signals(sig).name] = (
            counts["by_signal"].get(signal.Signals(sig).name, 0) + 1
        )
        counts["mixed_on_disk"] += refs.classify(folder) not in ("0", "1")
        subprocess.run(
            [sys.executable, "-c", RECOVER, str(folder)], env=ENV, check=True, timeout=60
        )
        state = refs.classify(folder)
        label = {"0": "old", "1": "new"}.get(state)
        counts[label or "bad"] += 1
        if label is None:
            print(f"  {command} trial {trial}: {state} after {key}", flush=True)
        done = _run(folder, make(1))
        if done.returncode != 0 or refs.classify(folder) != "1":
            counts["next_not_new"] += 1
            print(f"  {command} trial {trial}: next run left {refs.classify(folder)}")
        counts["temps_after_next"] += bool(_temps(folder))
        counts["journals_after_next"] += bool(_journals(folder))
        shutil.rmtree(folder)
    return counts


def concurrency_campaign(base: Path, command: str, rounds: int, rng: random.Random) -> dict:
    refs = Generations(base, command, 4)
    make, _ = COMMANDS[command]
    counts = {
        "rounds": 0,
        "runs": 0,
        "whole_set": 0,
        "bad": 0,
        "hits": 0,
        "wrong_hits": 0,
        "temps_left": 0,
    }
    for trial in range(rounds):
        folder = base / f"conc-{command}-{trial}"
        shutil.copytree(base / "inputs", folder)
        gens = rng.sample(range(4), rng.randint(2, 4))
        procs = [
            subprocess.Popen(
                _cli(folder, *make(g)),
                cwd=folder,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for g in gens
        ]
        for proc in procs:
            proc.communicate(timeout=600)
        counts["rounds"] += 1
        counts["runs"] += len(gens)
        state = refs.classify(folder)
        if state in {str(g) for g in gens}:
            counts["whole_set"] += 1
        else:
            counts["bad"] += 1
            print(f"  {command} round {trial}: {state} from {gens}", flush=True)
        counts["temps_left"] += bool(_temps(folder))
        if command == "calibrate":  # a re-run with each input: a hit must serve that input's set
            for g in gens:
                shutil.copytree(folder, folder.with_name(folder.name + f"-re{g}"))
                again = folder.with_name(folder.name + f"-re{g}")
                done = _run(again, make(g))
                if "up to date" in done.stdout:
                    counts["hits"] += 1
                    counts["wrong_hits"] += refs.classify(again) != str(g)
                shutil.rmtree(again)
        shutil.rmtree(folder)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=26, help="kills per command")
    parser.add_argument("--rounds", type=int, default=10, help="concurrency rounds per command")
    parser.add_argument(
        "--publish-kills", type=int, default=0, help="kills per command at publish marks"
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--commands", default="fix,calibrate,quantize,build")
    parser.add_argument("--src", default=str(ROOT / "src"), help="library to test (e.g. main's)")
    args = parser.parse_args()
    ENV["PYTHONPATH"] = args.src
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="o2t-campaign-") as tmp:
        base = Path(tmp)
        (base / "inputs").mkdir()
        _inputs(base / "inputs")
        for g in range(4):  # quantize's caches, one per generation
            done = _run(
                base / "inputs",
                ["calibrate", "m0.onnx", "--data", f"d{g}.npy", "-o", f"c{g}.cache"],
            )
            assert done.returncode == 0, done.stderr
        started = time.time()
        if args.kills:
            print(
                "| command | kills | signal | finished before it | old set | new set | mixed/torn | "
                "temps after kill | temps after next run | next run not the new set |"
            )
            print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for command in args.commands.split(",") if args.kills else ():
            c = kill_campaign(base, command, args.kills, rng)
            sigs = ", ".join(f"{k} {v}" for k, v in sorted(c["by_signal"].items()))
            print(
                f"| {command} | {c['kills']} | {sigs} | {c['finished_first']} | {c['old']} | "
                f"{c['new']} | {c['bad']} | {c['temps_after_kill']} | {c['temps_after_next']} | "
                f"{c['next_not_new']} |",
                flush=True,
            )
        if args.publish_kills:
            print()
            print(
                "| command | kills | where (mark) | signal | finished before it | mixed on disk "
                "(journal pending) | old set | new set | mixed/torn as the next process sees it "
                "| temps after next run | journals after next run | next run not the new set |"
            )
            print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for command in args.commands.split(",") if args.publish_kills else ():
            c = publish_campaign(base, command, args.publish_kills, rng)
            where = ", ".join(f"{k} {v}" for k, v in sorted(c["by_mark"].items()))
            sigs = ", ".join(f"{k} {v}" for k, v in sorted(c["by_signal"].items()))
            print(
                f"| {command} | {c['kills']} | {where} | {sigs} | {c['finished_first']} | "
                f"{c['mixed_on_disk']} | {c['old']} | {c['new']} | {c['bad']} | "
                f"{c['temps_after_next']} | {c['journals_after_next']} | {c['next_not_new']} |",
                flush=True,
            )
        if not args.rounds:
            print(f"\n{time.time() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")
            return
        print()
        print(
            "| command | rounds | runs | one run's whole set | mixed/torn | temps left | "
            "re-run hits | hits on foreign bytes |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for command in ("calibrate", "build", "fix"):
            if command not in args.commands:
                continue
            c = concurrency_campaign(base, command, args.rounds, rng)
            print(
                f"| {command} | {c['rounds']} | {c['runs']} | {c['whole_set']} | {c['bad']} | "
                f"{c['temps_left']} | {c['hits']} | {c['wrong_hits']} |",
                flush=True,
            )
        print(f"\n{time.time() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
