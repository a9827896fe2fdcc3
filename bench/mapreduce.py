"""MapReduce benchmark: synod's local runner against hand-written baselines and
other frameworks, on data it generates itself. It prints its figures.

    uv run python bench/mapreduce.py                      # small sizes (50/50/10 MB)
    uv run python bench/mapreduce.py --full               # 1 GB / 1 GB / 100 MB
    uv run python bench/mapreduce.py --frameworks         # also mrjob, dask.bag, pyspark
    uv run python bench/mapreduce.py --only wc --wc-mb 200 --frameworks dask
    uv run python bench/mapreduce.py --only wc,startup --wc-mb 20 --repeat 1
    uv run python bench/mapreduce.py --full --only wc --frameworks --slice mrjob=20 --variants Pool,synod

Workloads (issue 7, item 7):
  wc     word count on a Zipf corpus (~12 words a line, 200k-word vocabulary);
  sort   sort of 100-byte records (10-byte printable key, newline-terminated);
  index  inverted index over documents ``doc_id<TAB>text``;
  startup  a three-line word count with the local runner (in-process wall time,
           and the whole ``synod mr run`` command).

Every variant runs in its own process, so its peak memory (the largest resident
set among the process and its children, from getrusage) is its own. Baselines:
single-process Python (``collections.Counter`` / ``sorted`` / a dict), a
hand-written ``multiprocessing.Pool`` program (the practical limit for Python
here), GNU ``sort`` for the sort; with ``--frameworks``, mrjob's local runner,
dask.bag (processes) and pyspark (local[N]) are installed into a throwaway venv
under bench/out/ (never as synod dependencies) and run on the same data. Each
figure is the median of ``--repeat`` runs, taken in interleaved rounds (every
variant once per round) so that load from other work falls on all of them
alike; ratios are against the Pool baseline. CPU time is user + system of the
variant's process and its children (the frameworks' JVM included).

A slow framework can run on a slice instead (``--slice mrjob=20``: the first
20 MB of the same generated data, since the generators are prefix-stable): its
line then says so, gives the MB/s it measured on the slice, and its time and
ratios are the full-size *projection* (time x full size / slice size), marked
``projected``. ``--variants`` keeps only the baselines whose names contain one
of the given words (the Pool and synod, for a same-run reference next to the
frameworks).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "mapreduce"
VENV = ROOT / "bench" / "out" / "venv-mapreduce"
EXAMPLES = ROOT / "examples"
MB = 1024 * 1024

# ---------------------------------------------------------------- data


def _zipf_words(rng: random.Random, size: int) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) + str(i % 10)
             for i in range(size)]
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(size)))
    return words, cumulative


def generate_corpus(path: Path, size_bytes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    words, cumulative = _zipf_words(rng, 200_000)
    with path.open("w") as handle:
        written = 0
        while written < size_bytes:
            drawn = rng.choices(words, cum_weights=cumulative, k=12_000)
            text = "\n".join(" ".join(drawn[i : i + 12]) for i in range(0, 12_000, 12)) + "\n"
            handle.write(text)
            written += len(text)


def generate_records(path: Path, size_bytes: int, seed: int = 8) -> None:
    """100-byte records: a 10-byte printable key, 89 bytes of filler, a newline."""
    rng = random.Random(seed)
    printable = bytes(range(33, 127))
    table = bytes(printable[i % len(printable)] for i in range(256))
    count = size_bytes // 100
    with path.open("wb") as handle:
        done = 0
        while done < count:
            batch = min(100_000, count - done)
            keys = rng.randbytes(10 * batch).translate(table)
            lines = [keys[i * 10 : i * 10 + 10] + b"%010d" % (done + i) + b"." * 79 + b"\n"
                     for i in range(batch)]
            handle.write(b"".join(lines))
            done += batch


def generate_documents(path: Path, size_bytes: int, seed: int = 9) -> None:
    rng = random.Random(seed)
    words, cumulative = _zipf_words(rng, 50_000)
    with path.open("w") as handle:
        written = 0
        doc = 0
        while written < size_bytes:
            lines = []
            for _ in range(1000):
                body = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(20, 200)))
                lines.append(f"d{doc:09d}\t{body}")
                doc += 1
            text = "\n".join(lines) + "\n"
            handle.write(text)
            written += len(text)


def dataset(kind: str, size_mb: int) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{kind}-{size_mb}mb.txt"
    if not path.exists():
        started = time.monotonic()
        temp = path.with_suffix(".tmp")
        {"wc": generate_corpus, "sort": generate_records, "index": generate_documents}[kind](
            temp, size_mb * MB)
        temp.rename(path)
        print(f"  generated {path.name} in {time.monotonic() - started:.1f} s", flush=True)
    return path


# ------------------------------------------------------------ baselines


def _read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as handle:
        if start:
            handle.seek(start - 1)
            handle.readline()
        position = handle.tell()
        if position >= end:
            return b""
        data = handle.read(end - position)
        if not data.endswith(b"\n"):
            data += handle.readline()
        return data


def _ranges(path: Path, pieces: int) -> list[tuple[str, int, int]]:
    size = path.stat().st_size
    return [(str(path), size * i // pieces, size * (i + 1) // pieces) for i in range(pieces)]


def _count_range(args: tuple[str, int, int]) -> Counter[str]:
    counts: Counter[str] = Counter()
    data = _read_range(*args)
    start = 0
    while start < len(data):  # 8 MB at a time, each piece cut after a newline
        end = min(len(data), start + 8 * MB)
        if end < len(data):
            end = data.rfind(b"\n", start, end) + 1 or end
        counts.update(data[start:end].decode().split())
        start = end
    return counts


def _write_counts(counts: Counter[str], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with (output / "part-00000").open("w") as handle:
        handle.writelines(f"{word}\t{count}\n" for word, count in sorted(counts.items()))


def wc_counter(source: Path, output: Path, workers: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    with source.open() as handle:
        while True:
            lines = handle.readlines(8 * MB)
            if not lines:
                break
            counts.update("".join(lines).split())
    _write_counts(counts, output)
    return {"distinct": len(counts), "total": sum(counts.values())}


def wc_pool(source: Path, output: Path, workers: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    with Pool(workers) as pool:
        for part in pool.imap_unordered(_count_range, _ranges(source, workers * 4)):
            counts.update(part)
    _write_counts(counts, output)
    return {"distinct": len(counts), "total": sum(counts.values())}


def _synod(example: str, source: Path, output: Path, workers: int, reducers: int | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from synod.mapreduce import MapReduceConfig, load_job, run_job

    config = MapReduceConfig()
    budget_mb = int(os.environ.get("BENCH_SYNOD_BUDGET_MB", "0"))
    if budget_mb:
        config = MapReduceConfig(map_buffer_bytes_max=budget_mb * MB, reduce_memory_bytes_max=budget_mb * MB)
    job = load_job(EXAMPLES / example)
    result = run_job(job, [source], output, workers=workers, reducers=reducers, overwrite=True,
                     config=config)
    return {"records_in": result.records_in, "records_out": result.records_out,
            "attempts": sum(s.attempts_started for s in result.steps)}


def wc_synod(source: Path, output: Path, workers: int) -> dict[str, Any]:
    info = _synod("word_count.py", source, output, workers)
    total = 0
    for part in sorted(output.glob("part-*")):
        with part.open() as handle:
            total += sum(int(line.rsplit("\t", 1)[1]) for line in handle)
    info.update(distinct=info["records_out"], total=total)
    return info


def sort_sorted(source: Path, output: Path, workers: int) -> dict[str, Any]:
    with source.open("rb") as handle:
        lines = handle.readlines()
    lines.sort()
    output.mkdir(parents=True, exist_ok=True)
    with (output / "part-00000").open("wb") as handle:
        handle.writelines(lines)
    return {"records": len(lines)}


def _sort_map(args: tuple[str, int, int, list[bytes], str, int]) -> None:
    path, start, end, bounds, scratch, index = args
    buckets: list[list[bytes]] = [[] for _ in range(len(bounds) + 1)]
    for line in _read_range(path, start, end).splitlines(keepends=True):
        buckets[bisect.bisect_right(bounds, line[:10])].append(line)
    for r, bucket in enumerate(buckets):
        with open(f"{scratch}/m{index}-r{r}", "wb") as handle:
            handle.writelines(bucket)


def _sort_reduce(args: tuple[str, int, int, str]) -> int:
    scratch, r, maps, output = args
    lines: list[bytes] = []
    for m in range(maps):
        with open(f"{scratch}/m{m}-r{r}", "rb") as handle:
            lines.extend(handle.readlines())
    lines.sort()
    with open(f"{output}/part-{r:05d}", "wb") as handle:
        handle.writelines(lines)
    return len(lines)


def sort_pool(source: Path, output: Path, workers: int) -> dict[str, Any]:
    ranges = _ranges(source, workers * 4)
    rng = random.Random(1)
    sample: list[bytes] = []
    for path, start, end in rng.sample(ranges, min(len(ranges), 10)):
        sample.extend(line[:10] for line in _read_range(path, start, min(end, start + 100_000)).splitlines())
    sample.sort()
    reducers = workers
    bounds = [sample[len(sample) * i // reducers] for i in range(1, reducers)]
    scratch = OUT / "pool-sort-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    output.mkdir(parents=True, exist_ok=True)
    with Pool(workers) as pool:
        pool.map(_sort_map, [(p, s, e, bounds, str(scratch), i) for i, (p, s, e) in enumerate(ranges)])
        records = sum(pool.map(_sort_reduce, [(str(scratch), r, len(ranges), str(output))
                                              for r in range(reducers)]))
    shutil.rmtree(scratch, ignore_errors=True)
    return {"records": records}


def sort_gnu(source: Path, output: Path, workers: int) -> dict[str, Any]:
    output.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sort", "-S", "25%", f"--parallel={workers}", "-o", str(output / "part-00000"),
                    str(source)], env={**os.environ, "LC_ALL": "C"}, check=True)
    return {}


def sort_synod(source: Path, output: Path, workers: int) -> dict[str, Any]:
    return _synod("terasort.py", source, output, workers)


def index_dict(source: Path, output: Path, workers: int) -> dict[str, Any]:
    index: dict[str, set[str]] = {}
    with source.open() as handle:
        for line in handle:
            doc, _, text = line.rstrip("\n").partition("\t")
            for word in set(text.split()):
                index.setdefault(word, set()).add(doc)
    output.mkdir(parents=True, exist_ok=True)
    with (output / "part-00000").open("w") as handle:
        for word in sorted(index):
            handle.write(f"{word}\t{json.dumps(sorted(index[word]))}\n")
    return {"words": len(index)}


def _index_range(args: tuple[str, int, int]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for line in _read_range(*args).decode().splitlines():
        doc, _, text = line.partition("\t")
        for word in set(text.split()):
            index.setdefault(word, []).append(doc)
    return index


def index_pool(source: Path, output: Path, workers: int) -> dict[str, Any]:
    index: dict[str, list[str]] = {}
    with Pool(workers) as pool:
        for part in pool.imap_unordered(_index_range, _ranges(source, workers * 4)):
            for word, docs in part.items():
                index.setdefault(word, []).extend(docs)
    output.mkdir(parents=True, exist_ok=True)
    with (output / "part-00000").open("w") as handle:
        for word in sorted(index):
            handle.write(f"{word}\t{json.dumps(sorted(index[word]))}\n")
    return {"words": len(index)}


def index_synod(source: Path, output: Path, workers: int) -> dict[str, Any]:
    return _synod("inverted_index.py", source, output, workers)


# ------------------------------------------------------------ frameworks

FRAMEWORK_SCRIPTS = {
    "mrjob": '''
import os
from mrjob.job import MRJob
class WC(MRJob):
    def mapper(self, _, line):
        for w in line.split():
            yield w, 1
    def combiner(self, w, c):
        yield w, sum(c)
    def reducer(self, w, c):
        yield w, sum(c)
class Sort(MRJob):
    def mapper(self, _, line):
        yield line[:10], line[10:]
    def reducer(self, k, vs):
        for v in vs:
            yield k, v
if __name__ == "__main__":
    # mrjob re-runs this file for each task with its own arguments: the workload
    # comes from the environment.
    (WC if os.environ["BENCH_KIND"] == "wc" else Sort).run()
''',
    "dask": '''
import sys, dask, dask.bag as db

def main():
    kind, workers, source, output = sys.argv[1:5]
    with dask.config.set(scheduler="processes", num_workers=int(workers)):
        b = db.read_text(source, blocksize="16MiB")
        if kind == "wc":
            result = b.str.split().flatten().frequencies().compute()
            with open(output + "/part-00000", "w") as handle:
                handle.writelines(f"{w}\\t{c}\\n" for w, c in sorted(result))
        else:
            df = b.map(lambda line: {"k": line[:10], "v": line.rstrip("\\n")}).to_dataframe()
            df.set_index("k").to_csv(output + "/part-*.csv")

if __name__ == "__main__":
    main()
''',
    "pyspark": '''
import sys
from pyspark.sql import SparkSession

if __name__ == "__main__":
    kind, workers, source, output = sys.argv[1:5]
    spark = (SparkSession.builder.master(f"local[{workers}]").config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    lines = spark.sparkContext.textFile(source)
    if kind == "wc":
        counts = lines.flatMap(lambda l: l.split()).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
        counts.saveAsTextFile(output)
    else:
        lines.sortBy(lambda l: l[:10], numPartitions=int(workers)).saveAsTextFile(output)
    spark.stop()
''',
}


def ensure_frameworks() -> Path | None:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    print("  installing mrjob, dask[bag,dataframe], pyspark into a throwaway venv "
          f"({VENV.relative_to(ROOT)}) ...", flush=True)
    try:
        subprocess.run(["uv", "venv", "--python", sys.executable, str(VENV)], check=True,
                       capture_output=True)
        subprocess.run(["uv", "pip", "install", "--python", str(python), "mrjob",
                        "dask[bag,dataframe]", "pyspark"], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        print(f"  frameworks unavailable: {error}", flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        return None
    return python


def run_framework(python: Path, name: str, kind: str, source: Path, output: Path, workers: int) -> dict[str, Any]:
    script = OUT / f"fw_{name}.py"
    script.write_text(FRAMEWORK_SCRIPTS[name])
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    if name in ("mrjob", "pyspark"):
        output.rmdir()
    if name == "mrjob":
        command = [str(python), str(script), "-r", "local", "--num-cores", str(workers),
                   "--output-dir", str(output), "--no-conf", str(source)]
    else:
        command = [str(python), str(script), kind, str(workers), str(source), str(output)]
    environment = {**os.environ, "BENCH_KIND": kind, "SPARK_LOCAL_IP": "127.0.0.1",
                   "PYSPARK_PYTHON": str(python)}
    usage_path = OUT / f"usage-{name}.json"
    usage_path.unlink(missing_ok=True)
    started = time.monotonic()
    process = subprocess.run([sys.executable, __file__, "--wrap", str(usage_path), *command],
                             capture_output=True, text=True, timeout=7200, env=environment, cwd=OUT)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(process.stderr.strip().splitlines()[-1] if process.stderr.strip() else "failed")
    usage = json.loads(usage_path.read_text())
    return {"seconds": seconds, "cpu_s": usage["cpu_s"], "peak_mb": usage["peak_mb"]}


def wrap(usage_path: str, command: list[str]) -> int:
    """Run ``command`` as a child subreaper and write the CPU time and the peak
    memory of it and all its descendants to ``usage_path``: Spark's JVM and
    dask's workers are orphaned when their parent exits without waiting, and
    would otherwise be counted nowhere (and ``getrusage`` in the harness would
    carry one framework's peak into the next)."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    status = subprocess.run(command).returncode
    deadline = time.monotonic() + 60.0
    complete = True
    while True:  # reap the orphans that were reparented here
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                complete = False
                break
            time.sleep(0.05)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(usage_path).write_text(json.dumps({
        "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024, "complete": complete}))
    return status


# ------------------------------------------------------------- harness

VARIANTS = {
    "wc": {"Counter (1 process)": wc_counter, "Pool (hand-written)": wc_pool, "synod local": wc_synod},
    "sort": {"sorted (1 process)": sort_sorted, "Pool (hand-written)": sort_pool,
             "GNU sort": sort_gnu, "synod local": sort_synod},
    "index": {"dict (1 process)": index_dict, "Pool (hand-written)": index_pool, "synod local": index_synod},
}


def run_one(kind: str, name: str, source: str, output: str, workers: int) -> None:
    """Child-process entry: run one variant, print JSON with time and peak memory."""
    function = VARIANTS[kind][name]
    shutil.rmtree(output, ignore_errors=True)
    started = time.monotonic()
    info = function(Path(source), Path(output), workers)
    seconds = time.monotonic() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = max(own.ru_maxrss, children.ru_maxrss)
    cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "peak_mb": peak_kb / 1024, **info}))


def measure(kind: str, name: str, source: Path, workers: int) -> dict[str, Any]:
    output = OUT / f"out-{kind}"
    process = subprocess.run(
        [sys.executable, __file__, "--run-one", kind, name, str(source), str(output), str(workers)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if process.returncode != 0:
        raise RuntimeError(process.stderr.strip()[-2000:])
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    shutil.rmtree(output, ignore_errors=True)
    return result


def bench_workload(kind: str, size_mb: int, args: argparse.Namespace, python: Path | None) -> list[dict[str, Any]]:
    source = dataset(kind, size_mb)
    size = source.stat().st_size
    print(f"\n== {kind}: {size / MB:.0f} MB, {args.workers} workers, median of {args.repeat} "
          f"(variants interleaved: round r runs every variant once)", flush=True)
    wanted = [word for word in args.variants.split(",") if word]
    names: list[tuple[str, Any]] = [(n, None) for n in VARIANTS[kind]
                                    if not wanted or any(word in n for word in wanted)]
    if python is not None and kind in ("wc", "sort"):
        names += [(f"{fw}", fw) for fw in args.frameworks.split(",")]
    slices = _slices(args.slice)
    sources = {name: dataset(kind, slices[name]) if name in slices else source for name, _ in names}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in names}
    failed: set[str] = set()
    # Interleaved rounds, so that load from other work on a shared machine falls
    # on every variant alike rather than on whichever ran during a busy minute.
    for round_index in range(args.repeat):
        for name, framework in names:
            if name in failed:
                continue
            try:
                if framework is None:
                    result = measure(kind, name, sources[name], args.workers)
                else:
                    assert python is not None
                    result = run_framework(python, framework, kind, sources[name],
                                           OUT / f"out-{kind}-{framework}", args.workers)
                if sources[name] != source:
                    _project(result, sources[name].stat().st_size, size)
            except Exception as error:  # a baseline that fails is reported, not fatal
                print(f"  {name:<22} failed: {str(error).splitlines()[-1][:200]}", flush=True)
                failed.add(name)
                continue
            runs[name].append(result)
            note = (f"  (measured {result['measured_s']:.2f} s on a {result['slice_mb']:.0f} MB slice, "
                    f"{result['slice_mb_per_s']:.2f} MB/s; projected)" if "slice_mb" in result else "")
            print(f"  round {round_index + 1}: {name:<22} {result['seconds']:8.2f} s  cpu {result['cpu_s']:7.2f} s"
                  f"{note}", flush=True)
    rows = []
    for name, _ in names:
        if not runs[name]:
            continue
        done = runs[name]
        seconds = statistics.median(r["seconds"] for r in done)
        cpu_s = statistics.median(r["cpu_s"] for r in done)
        row = {"workload": kind, "variant": name, "seconds": seconds, "cpu_s": cpu_s,
               "mb_per_s": size / MB / seconds, "peak_mb": max(r["peak_mb"] for r in done),
               "runs": [round(r["seconds"], 2) for r in done], "cpu_runs": [round(r["cpu_s"], 2) for r in done]}
        if "slice_mb" in done[0]:
            row["projected_from_slice_mb"] = done[0]["slice_mb"]
            row["slice_mb_per_s"] = statistics.median(r["slice_mb_per_s"] for r in done)
        extra = {k: v for k, v in done[0].items()
                 if k not in ("seconds", "peak_mb", "cpu_s", "measured_s", "measured_cpu_s", "slice_mb",
                              "slice_mb_per_s")}
        rows.append(row)
        label = (f"  PROJECTED from a {row['projected_from_slice_mb']:.0f} MB slice at "
                 f"{row['slice_mb_per_s']:.2f} MB/s (peak memory is the slice's)"
                 if "projected_from_slice_mb" in row else "")
        print(f"  {name:<22} {seconds:8.2f} s  cpu {cpu_s:7.2f} s  {row['mb_per_s']:7.1f} MB/s  "
              f"peak {row['peak_mb']:6.0f} MB  runs {row['runs']}  {json.dumps(extra) if extra else ''}{label}",
              flush=True)
    pool = next((r for r in rows if r["variant"].startswith("Pool")), None)
    if pool:
        for row in rows:
            print(f"  ratio {row['variant']:<22} / Pool: wall {row['seconds'] / pool['seconds']:5.2f}"
                  f"  cpu {row['cpu_s'] / pool['cpu_s']:5.2f}"
                  f"{'  (projected)' if 'projected_from_slice_mb' in row else ''}")
    return rows


def _slices(spec: str) -> dict[str, int]:
    """``mrjob=20,dask=100`` -> {"mrjob": 20, "dask": 100} (MB)."""
    slices = {}
    for item in filter(None, spec.split(",")):
        name, _, size_mb = item.partition("=")
        slices[name] = int(size_mb)
    return slices


def _project(result: dict[str, Any], slice_bytes: int, full_bytes: int) -> None:
    """Scale a run on a slice to the full input, keeping what was measured."""
    factor = full_bytes / slice_bytes
    result.update(measured_s=result["seconds"], measured_cpu_s=result["cpu_s"], slice_mb=slice_bytes / MB,
                  slice_mb_per_s=slice_bytes / MB / result["seconds"], seconds=result["seconds"] * factor,
                  cpu_s=result["cpu_s"] * factor)


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from synod.mapreduce import load_job, run_job

    tiny = OUT / "tiny.txt"
    OUT.mkdir(parents=True, exist_ok=True)
    tiny.write_text("the quick brown fox\njumps over\nthe lazy dog\n")
    job = load_job(EXAMPLES / "word_count.py")
    in_process = []
    for _ in range(5):
        started = time.monotonic()
        run_job(job, [tiny], OUT / "tiny-out", workers=args.workers, overwrite=True)
        in_process.append(time.monotonic() - started)
    command = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "synod", "mr", "run", str(EXAMPLES / "word_count.py"),
                        str(tiny), "-o", str(OUT / "tiny-out"), "--overwrite", "--workers",
                        str(args.workers)], check=True, capture_output=True, cwd=ROOT)
        command.append(time.monotonic() - started)
    result = {"run_job_s": statistics.median(in_process), "command_s": statistics.median(command)}
    print(f"\n== startup: tiny word count, local runner, {args.workers} workers")
    print(f"  run_job() wall time   {result['run_job_s']:.3f} s (median of 5; {[round(x, 3) for x in in_process]})")
    print(f"  `synod mr run` process {result['command_s']:.3f} s (median of 3, includes interpreter start)")
    return result


def main() -> None:
    if sys.argv[1:2] == ["--wrap"]:
        sys.exit(wrap(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-one", nargs=5, metavar=("KIND", "NAME", "SOURCE", "OUTPUT", "WORKERS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help="1 GB / 1 GB / 100 MB")
    parser.add_argument("--wc-mb", type=int, default=50)
    parser.add_argument("--sort-mb", type=int, default=50)
    parser.add_argument("--index-mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="wc,sort,index,startup")
    parser.add_argument("--frameworks", nargs="?", const="mrjob,dask,pyspark", default="",
                        help="install and run these frameworks (default with the flag: mrjob,dask,pyspark)")
    parser.add_argument("--slice", default="",
                        help="run these variants on a slice and project: NAME=MB[,NAME=MB] (e.g. mrjob=20)")
    parser.add_argument("--variants", default="",
                        help="only the baselines whose names contain one of these words (e.g. Pool,synod)")
    parser.add_argument("--synod-budget-mb", type=int, default=0,
                        help="synod's map and reduce memory budgets (default: MapReduceConfig's)")
    args = parser.parse_args()
    if args.run_one:
        kind, name, source, output, workers = args.run_one
        run_one(kind, name, source, output, int(workers))
        return
    if args.full:
        args.wc_mb, args.sort_mb, args.index_mb = 1024, 1024, 100
    if args.synod_budget_mb:
        os.environ["BENCH_SYNOD_BUDGET_MB"] = str(args.synod_budget_mb)
    only = set(args.only.split(","))
    print(f"synod MapReduce benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"cpus={os.cpu_count()}  python={sys.version.split()[0]}")
    python = ensure_frameworks() if args.frameworks else None
    results: dict[str, Any] = {}
    for kind, size in (("wc", args.wc_mb), ("sort", args.sort_mb), ("index", args.index_mb)):
        if kind in only:
            results[kind] = bench_workload(kind, size, args, python)
    if "startup" in only:
        results["startup"] = bench_startup(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
