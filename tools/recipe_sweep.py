#!/usr/bin/env python
"""Train a preset with a few overrides over several seeds, and report the accuracies side by side.

    python tools/recipe_sweep.py --candidates '{"base": {}, "ae1000": {"ae_steps": 1000}}' --seeds 0 1 2 \\
        --workers 3 --out sweep.json

Each (candidate, seed) is one `ldm_edu.cli.train(preset, seed=..., overrides=...)` in its own process, `--workers` at
a time (one torch thread each on a CPU), launched seed by seed so that a deadline (`--budget-s`) still leaves every
candidate measured on the first seeds. Settings are chosen on the validation prompts ('val'); the test prompts
('heldout') are reported. `--guidance 2 3 5` also scores each finished model on the validation prompts at those
guidance scales. The JSON is rewritten after every finished run, so a run cut short keeps what it measured.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, sys, time
import torch
from pathlib import Path
from ldm_edu.cli import train, eval_prompts, prompt_accuracy
from ldm_edu.ldm import LatentDiffusion
from ldm_edu.utils import get_device, load_json
preset, seed, overrides, out, guidances = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
m = train(preset, seed=seed, out=out, progress=False, overrides=overrides)
res = dict(metrics=m, guidance_val={})
if guidances:
    cfg = load_json(Path(out) / 'run.json')
    model = LatentDiffusion.load(Path(out) / 'model', device=get_device())
    for g in guidances:
        res['guidance_val'][str(g)] = prompt_accuracy(model, eval_prompts(cfg, 'val'), dict(cfg, guidance=g))['all']
Path(out, 'sweep_result.json').write_text(json.dumps(res))
'''


def summary(rec: dict) -> dict:
    "The numbers one row of the report shows."
    m = rec['metrics']
    ae = m['autoencoder'].get('reconstructions_heldout') or {}
    return dict(test=m['prompt_accuracy_heldout']['all'], val=m['prompt_accuracy_val']['all'],
                train=m['prompt_accuracy_train_combinations']['all'], ae_read=ae.get('all'),
                ae_steps=m['autoencoder'].get('steps'), steps=m['diffusion_steps'],
                seconds=round(m['seconds_total'], 1), guidance_val=rec.get('guidance_val', {}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--preset', default='cpu')
    p.add_argument('--candidates', required=True, help='JSON: {name: {preset key: value}}')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads per run')
    p.add_argument('--guidance', type=float, nargs='*', default=[], help='also score validation at these scales')
    p.add_argument('--budget-s', type=float, default=None, help='launch no run after this many seconds')
    p.add_argument('--runs', default='runs/sweep', help='folder for the run folders')
    p.add_argument('--out', default='sweep.json')
    a = p.parse_args(argv)
    cands = json.loads(a.candidates)
    jobs = [(name, seed) for seed in a.seeds for name in cands]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    t0 = time.perf_counter()
    report = dict(preset=a.preset, candidates=cands, seeds=a.seeds, runs={}, failed={}, not_run=[])
    running: dict[tuple, tuple] = {}

    def write():
        report['seconds'] = round(time.perf_counter() - t0, 1)
        Path(a.out).write_text(json.dumps(report, indent=1))

    while jobs or running:
        while jobs and len(running) < a.workers:
            if a.budget_s is not None and time.perf_counter() - t0 > a.budget_s:
                report['not_run'] = [f'{n}/s{s}' for n, s in jobs]
                jobs = []
                break
            name, seed = jobs.pop(0)
            out = Path(a.runs) / f'{name}-s{seed}'
            if out.exists():
                import shutil
                shutil.rmtree(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(f'{out}.log', 'w')
            args = [sys.executable, '-c', CHILD, a.preset, str(seed), json.dumps(cands[name]), str(out),
                    json.dumps(a.guidance)]
            running[(name, seed)] = (subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT), out, log)
            print(f'[{time.perf_counter() - t0:6.0f} s] started {name} seed {seed}', flush=True)
        time.sleep(2)
        for key, (proc, out, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[key]
            tag = f'{key[0]}/s{key[1]}'
            res = out / 'sweep_result.json'
            if proc.returncode == 0 and res.is_file():
                report['runs'][tag] = summary(json.loads(res.read_text()))
                print(f'[{time.perf_counter() - t0:6.0f} s] {tag}: {report["runs"][tag]}', flush=True)
            else:
                report['failed'][tag] = Path(f'{out}.log').read_text()[-2000:]
                print(f'[{time.perf_counter() - t0:6.0f} s] {tag} FAILED (exit {proc.returncode})', flush=True)
            write()
    write()
    for name in cands:
        rows = [report['runs'][f'{name}/s{s}'] for s in a.seeds if f'{name}/s{s}' in report['runs']]
        if rows:
            fmt = lambda k: ' '.join(f'{r[k]:.1%}' for r in rows)
            print(f'{name:>12}: test {fmt("test")} | val {fmt("val")} | train {fmt("train")} | '
                  f'AE read {fmt("ae_read")} | {sum(r["seconds"] for r in rows) / len(rows):.0f} s/run')
    return 1 if report['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
