#!/usr/bin/env python
"""One prepared run of every GPU code path, for a machine with one CUDA GPU and no internet.

    python tools/gpu_check.py --out gpu_results.json               # on the GPU machine (about 10 minutes on an H100)
    python tools/gpu_check.py --dry-run --out dry.json             # on any CPU: the same steps at toy sizes

It runs each step in its own process (a failure is recorded and the next step still runs), in this order unless
`--only` names others:
  bench_eager, bench_compiled: the U-Net training-step benchmark against diffusers' UNet2DConditionModel, bf16
      (`python -m ldm_edu.bench unet`; needs diffusers);
  train_shapes, train_mnist: `ldm-edu train --preset gpu` with its evaluation (`--train-minutes` caps each);
  cells_NN: notebook NN in quick mode with its `#| cuda` cells, executed in-process (no Jupyter kernel needed; the
      notebooks import fastcore's test helpers).
`--budget-s` keeps the whole run inside a lease: no step starts after the budget, and each gets at most what is left.
The JSON (device, torch, each step's command, exit status, seconds and results) is rewritten after every step.

On a bare machine with torch, first carry the missing packages as wheels: `bash tools/gpu_wheels.sh .whl` (on a
machine with internet) downloads them for Python 3.12; there, `pip install --no-index --no-deps --target /tmp/site
.whl/*.whl` and put /tmp/site and the repository on PYTHONPATH. Or `--wheels .whl` installs `.[dev]` from the folder.
"""
from __future__ import annotations
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_step(name: str, cmd: list[str], results: dict, timeout: float, env: dict) -> dict:
    "Run `cmd` from the repository root; record its exit status, time and the tail of its output under `name`."
    print(f'== {name}: {" ".join(cmd)}', flush=True)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = r.returncode, (r.stdout + r.stderr)
    except subprocess.TimeoutExpired as e:
        rc, out = 'timeout', f'{e}'
    step = dict(command=' '.join(cmd), returncode=rc, seconds=round(time.perf_counter() - t0, 1),
                output_tail=out[-3000:])
    results['steps'][name] = step
    print(f'   -> exit {rc} in {step["seconds"]} s', flush=True)
    return step


def cuda_notebooks() -> list[str]:
    "The notebooks with at least one `#| cuda` cell."
    found = []
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        if any(''.join(c['source']).lstrip().startswith('#| cuda') for c in cells if c['cell_type'] == 'code'):
            found.append(str(nb.relative_to(ROOT)))
    return found


def _directives(src: str) -> dict[str, list[str]]:
    "The `#| name: value` lines at the top of a cell."
    out = {}
    for line in src.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith('#|'):
            break
        name, _, rest = line.lstrip()[2:].strip().partition(' ')
        out[name.rstrip(':')] = rest.split()
    return out


def exec_notebook(path: str, run_flags: set[str], out_json: str) -> int:
    """Run a notebook's code cells in this process, top to bottom, in quick mode (IN_TEST=1), the way the test
    runner would with `--flags` (for a machine without a Jupyter kernel). Cells flagged `slow`/`cuda`/... run only
    when their flag is in `run_flags`; `#| eval: false` cells never. Writes the flagged cells' printed output."""
    import configparser, contextlib, io, traceback
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    skip = set(cfg['DEFAULT'].get('tst_flags', '').split()) - run_flags
    os.environ['IN_TEST'] = '1'
    nb = Path(path).resolve()
    os.chdir(nb.parent)
    sys.path.insert(0, str(ROOT))
    import matplotlib
    matplotlib.use('Agg')
    ns: dict = {'__name__': '__main__'}
    report = dict(notebook=nb.name, cells=[])
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        src = ''.join(cell['source'])
        if cell['cell_type'] != 'code' or 'nbdev_export(' in src:
            continue
        d = _directives(src)
        if (d.get('eval') or [''])[0].lower() == 'false' or skip & d.keys():
            continue
        buf = io.StringIO()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(src, f'{nb.name}[{i}]', 'exec'), ns)
            err = None
        except Exception:
            err = traceback.format_exc()
        flagged = bool(run_flags & d.keys())
        if flagged or err:
            report['cells'].append(dict(index=i, flags=sorted(d.keys()), seconds=round(time.perf_counter() - t0, 1),
                                        output=buf.getvalue()[-4000:], error=err, source=src[:400]))
            print(f'cell {i} {sorted(d.keys())}: {buf.getvalue()[-2000:]}{err or ""}', flush=True)
        Path(out_json).write_text(json.dumps(report, indent=1))
        if err:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='gpu_results.json', help='the JSON to write (rewritten after every step)')
    p.add_argument('--dry-run', action='store_true', help='toy sizes on the CPU: checks the script and every step')
    p.add_argument('--wheels', default=None, help='install the package offline from this folder of wheels first')
    p.add_argument('--skip', default='', help='comma-separated step names to skip')
    p.add_argument('--only', default='', help='comma-separated step names to run, in this order (default: all)')
    p.add_argument('--budget-s', type=float, default=None, help='start no step after this many seconds; steps are '
                   'given at most the time left')
    p.add_argument('--train-minutes', type=float, default=None, help='--max-minutes for the gpu-preset trainings')
    p.add_argument('--exec-notebook', default=None, help=argparse.SUPPRESS)   # internal: one notebook, in process
    p.add_argument('--flags', default='cuda', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.exec_notebook:
        return exec_notebook(args.exec_notebook, set(args.flags.split()), args.out)
    import torch
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print('no CUDA device found: run with --dry-run on a CPU', file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    py = sys.executable
    t_start = time.perf_counter()
    results = dict(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else f'CPU ({platform.machine()})',
                   torch=torch.__version__, python=platform.python_version(), dry_run=dry, cpu_count=os.cpu_count(),
                   date=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()), steps={})
    skip = set(filter(None, args.skip.split(',')))
    work = ROOT / 'runs' / ('gpu-check-dry' if dry else 'gpu-check')
    work.mkdir(parents=True, exist_ok=True)

    def left(default: float) -> float:
        "A step's time limit: its default, or less when the budget is nearly spent."
        if args.budget_s is None:
            return default
        return min(default, args.budget_s - (time.perf_counter() - t_start))

    def save():
        Path(args.out).write_text(json.dumps(results, indent=1))

    if args.wheels:
        run_step('install', [py, '-m', 'pip', 'install', '--no-index', '--find-links', args.wheels, '-e', '.[dev]'],
                 results, 900, env)
    bench = [py, '-m', 'ldm_edu.bench', 'unet', '--dtype', 'bf16']
    bench += ['--device', 'cpu', '--batch', '2', '--steps', '1', '--warmup', '1', '--model-channels', '32'] if dry else []
    preset = 'tiny' if dry else 'gpu'
    steps: dict[str, tuple] = {}
    for name, extra in (('bench_eager', []), ('bench_compiled', ['--compile'])):
        steps[name] = ('bench', bench + extra + ['--json', str(work / f'{name}.json')], 900 if dry else 300,
                       work / f'{name}.json')
    for name, data in (('train_shapes', 'shapes'), ('train_mnist', 'mnist')):
        cmd = [py, '-m', 'ldm_edu.cli', 'train', '--preset', preset, '--data', data, '--out', str(work / name), '--quiet']
        if args.train_minutes is not None:
            cmd += ['--max-minutes', str(args.train_minutes)]
        steps[name] = ('train', cmd, 900 if dry else 420, work / name / 'metrics.json')
    for nb in cuda_notebooks():
        name = 'cells_' + Path(nb).name[:2]
        out = work / f'{name}.json'
        flags = '' if dry else 'cuda'     # a dry run checks that the notebooks run, cuda cells left out
        steps[name] = ('cells', [py, __file__, '--exec-notebook', nb, '--flags', flags, '--out', str(out)], 900, out)
    order = [s for s in args.only.split(',') if s] or list(steps)
    unknown = [s for s in order if s not in steps]
    if unknown:
        p.error(f'unknown steps {unknown}; known: {list(steps)}')
    for name in order:
        if name in skip:
            continue
        kind, cmd, timeout, result = steps[name]
        limit = left(timeout)
        if limit < 30:
            results['steps'][name] = dict(command=' '.join(cmd), returncode='not run: out of time')
            save()
            continue
        if kind == 'train' and Path(result).parent.exists():
            import shutil
            shutil.rmtree(Path(result).parent)
        step = run_step(name, cmd, results, limit, env)
        if Path(result).is_file():
            step['results'] = json.loads(Path(result).read_text())
        save()
    save()
    failed = [n for n, s in results['steps'].items() if s['returncode'] != 0]
    print(f'wrote {args.out}; {len(results["steps"])} steps, failed: {failed or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
