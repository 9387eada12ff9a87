#!/usr/bin/env python
"""One prepared run of every GPU code path, for a machine with one CUDA GPU and no internet.

    python tools/gpu_check.py --out gpu_results.json               # on the GPU machine (about 10 minutes on an H100)
    python tools/gpu_check.py --dry-run --out dry.json             # on any CPU: the same steps at toy sizes

It runs, in order, each step in its own process (a failure is recorded and the next step still runs):
  1. the U-Net training-step benchmark against diffusers' UNet2DConditionModel, bf16, eager and torch.compile
     (`python -m ldm_edu.bench unet`; needs diffusers);
  2. `ldm-edu train --preset gpu` (shapes) and its evaluation;
  3. `ldm-edu train --preset gpu --data mnist` (the offline digits) and its evaluation;
  4. the notebooks' `#| cuda` cells (`python -m pytest --flags cuda` on the notebooks that have any; needs nbdev).
and writes one JSON with the device name, torch version, each step's command, exit status, seconds and results.

On a bare machine with torch installed, first install the package and its test tools from a folder of wheels
made on a machine with internet (`pip download -d .whl diffusers nbdev==2.4.14 'fastcore<2' 'execnb<0.2' ...`):
`python tools/gpu_check.py --wheels .whl ...` runs `pip install --no-index --find-links .whl -e .[dev]` first.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='gpu_results.json', help='the JSON to write')
    p.add_argument('--dry-run', action='store_true', help='toy sizes on the CPU: checks the script and every step')
    p.add_argument('--wheels', default=None, help='install the package offline from this folder of wheels first')
    p.add_argument('--skip', default='', help='comma-separated step names to skip')
    args = p.parse_args(argv)
    import torch
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print('no CUDA device found: run with --dry-run on a CPU', file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    py = sys.executable
    results = dict(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else f'CPU ({platform.machine()})',
                   torch=torch.__version__, python=platform.python_version(), dry_run=dry,
                   date=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()), steps={})
    skip = set(filter(None, args.skip.split(',')))
    work = ROOT / 'runs' / ('gpu-check-dry' if dry else 'gpu-check')
    work.mkdir(parents=True, exist_ok=True)
    if args.wheels:
        run_step('install', [py, '-m', 'pip', 'install', '--no-index', '--find-links', args.wheels, '-e', '.[dev]'],
                 results, 900, env)
    bench = [py, '-m', 'ldm_edu.bench', 'unet', '--dtype', 'bf16']
    bench += ['--device', 'cpu', '--batch', '2', '--steps', '1', '--warmup', '1', '--model-channels', '32'] if dry else []
    for name, extra in (('bench_eager', []), ('bench_compiled', ['--compile'])):
        if name in skip: continue
        out = work / f'{name}.json'
        step = run_step(name, bench + extra + ['--json', str(out)], results, 900 if dry else 300, env)
        if out.is_file(): step['results'] = json.loads(out.read_text())
    preset = 'tiny' if dry else 'gpu'
    for name, data in (('train_shapes', 'shapes'), ('train_mnist', 'mnist')):
        if name in skip: continue
        run = work / name
        if run.exists():
            import shutil
            shutil.rmtree(run)
        cmd = [py, '-m', 'ldm_edu.cli', 'train', '--preset', preset, '--data', data, '--out', str(run), '--quiet']
        step = run_step(name, cmd, results, 900 if dry else 420, env)
        if (run / 'metrics.json').is_file(): step['metrics'] = json.loads((run / 'metrics.json').read_text())
    if 'cuda_cells' not in skip:
        nbs = cuda_notebooks()
        flags = [] if dry else ['--flags', 'cuda']        # a dry run checks that the notebooks run, cuda cells left out
        if nbs: run_step('cuda_cells', [py, '-m', 'pytest', '-q', *nbs, *flags], results, 900, env)
        results['cuda_notebooks'] = nbs
    Path(args.out).write_text(json.dumps(results, indent=1))
    failed = [n for n, s in results['steps'].items() if s['returncode'] != 0]
    print(f'wrote {args.out}; {len(results["steps"])} steps, failed: {failed or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
