"""The test runner: `pytest` executes every notebook in `nbs/` in quick mode, plus repository checks.

    pytest                                  # everything (what CI runs)
    pytest nbs/01_forward_process.ipynb     # one notebook
    pytest -k "01 or 02"                    # a selection
    pytest --flags "slow cuda"              # also run cells marked #| slow / #| cuda
    pytest --full                           # run notebooks at full size (IN_TEST unset)

Each notebook runs in a fresh Python process through nbdev's `test_nb` (so cells carrying a flag
from settings.ini's `tst_flags` are skipped unless forced), two at a time with one torch thread each
(`--nb-workers N` to change; on two cores this beats one notebook with two threads, since most
tensors in quick mode are small). Wall times are printed at the end.
The repository checks fail when `ldm_edu/` differs from a fresh `nbdev_export`, when README.md is
stale against nbs/index.ipynb, or when `.ci/run` and the README's set-up commands disagree.
"""
import configparser, filecmp, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent
NBS = ROOT / 'nbs'
_TIMES: dict[str, float] = {}

def _cfg():
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT / 'settings.ini'); return c['DEFAULT']

def pytest_addoption(parser):
    parser.addoption('--flags', default='', help='space-separated tst_flags whose cells should run (e.g. "slow cuda")')
    parser.addoption('--full', action='store_true', help='run notebooks at full size (do not set IN_TEST)')
    parser.addoption('--nb-timeout', type=float, default=1800, help='seconds before a single notebook is killed')
    parser.addoption('--nb-workers', type=int, default=int(os.environ.get('LDM_EDU_TEST_WORKERS', min(2, os.cpu_count() or 1))),
                     help='notebooks run at once (default: 2, or $LDM_EDU_TEST_WORKERS); each gets one torch thread when > 1')

def pytest_collect_file(parent, file_path):
    p = Path(file_path)
    if p.suffix == '.ipynb' and p.parent == NBS and not p.name.startswith(('_', '.')):
        return NotebookFile.from_parent(parent, path=p)
    if p == ROOT / 'settings.ini':
        return RepoChecks.from_parent(parent, path=p)

class NotebookFile(pytest.File):
    def collect(self): yield NotebookItem.from_parent(self, name='notebook')

_RUNNER = '''
import sys
from pathlib import Path
from nbdev.test import test_nb
fn, skip, force = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
ok, _ = test_nb(fn, skip_flags=skip, force_flags=force, showerr=True, basepath=sys.argv[4])
sys.exit(0 if ok else 1)
'''

def _run_notebook(path: Path, opt, skip: str, env: dict) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, '-c', _RUNNER, str(path), skip, opt.flags, str(ROOT)],
                           cwd=NBS, env=env, capture_output=True, text=True, timeout=opt.nb_timeout)
        return r.returncode, r.stdout, r.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return -1, '', f'{path.name} did not finish within {opt.nb_timeout:.0f} s', time.perf_counter() - start

_POOL, _FUTURES = None, {}

def _start_all(config):
    "Start every collected notebook on a pool of `--nb-workers` processes (each torch process gets 1 thread when > 1 worker)."
    global _POOL
    if _POOL is None:
        opt = config.option
        workers = max(1, opt.nb_workers)
        env = dict(os.environ)
        env.pop('IN_TEST', None)
        if not opt.full: env['IN_TEST'] = '1'
        else: env.setdefault('LDM_EDU_QUICK', '0')
        env.setdefault('MPLBACKEND', 'Agg')
        if workers > 1: env.setdefault('OMP_NUM_THREADS', '1')
        _POOL = ThreadPoolExecutor(workers)
        skip = _cfg().get('tst_flags', '')
        for item in getattr(config, '_nb_items', []):
            _FUTURES[item.path] = _POOL.submit(_run_notebook, item.path, opt, skip, env)
    return _FUTURES

def pytest_collection_modifyitems(session, config, items):
    config._nb_items = [i for i in items if isinstance(i, NotebookItem)]

def pytest_sessionfinish(session):
    if _POOL is not None: _POOL.shutdown(wait=False, cancel_futures=True)

class NotebookItem(pytest.Item):
    def runtest(self):
        rc, out, err, dt = _start_all(self.config)[self.path].result()
        _TIMES[self.path.name] = dt
        if rc != 0:
            err = err if len(err) < 10000 else err[:5000] + '\n[... cut ...]\n' + err[-5000:]
            raise NotebookFailure(f'{self.path.name} failed (exit {rc}):\n{err}\n{out[-2000:]}')

    def repr_failure(self, excinfo):
        return str(excinfo.value) if isinstance(excinfo.value, NotebookFailure) else super().repr_failure(excinfo)
    def reportinfo(self): return self.path, 0, f'notebook {self.path.name}'

class NotebookFailure(Exception): pass

class RepoChecks(pytest.File):
    def collect(self):
        for name in ('export_in_sync', 'readme_in_sync', 'ci_runs_readme_commands'):
            yield RepoCheck.from_parent(self, name=name)

class RepoCheck(pytest.Item):
    def runtest(self): getattr(self, self.name)()
    def reportinfo(self): return self.path, 0, f'repo check {self.name}'

    def export_in_sync(self):
        "A fresh nbdev_export of nbs/ must reproduce ldm_edu/ exactly."
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            shutil.copy(ROOT / 'settings.ini', d)
            shutil.copytree(NBS, d / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_*'))
            shutil.copytree(ROOT / 'ldm_edu', d / 'ldm_edu', ignore=shutil.ignore_patterns('__pycache__'))
            r = subprocess.run([sys.executable, '-c', 'from nbdev.doclinks import nbdev_export; nbdev_export()'], cwd=d, capture_output=True, text=True)
            assert r.returncode == 0, f'nbdev_export failed:\n{r.stderr}'
            ours = {p.relative_to(ROOT) for p in (ROOT / 'ldm_edu').rglob('*.py')}
            fresh = {p.relative_to(d) for p in (d / 'ldm_edu').rglob('*.py')}
            differ = sorted(str(p) for p in ours | fresh if p not in ours or p not in fresh or not filecmp.cmp(ROOT / p, d / p, shallow=False))
            assert not differ, f'ldm_edu/ is out of sync with the notebooks ({", ".join(differ)}): run `nbdev_export` and commit both'

    def readme_in_sync(self):
        "README.md must equal the rendering of nbs/index.ipynb."
        sys.path.insert(0, str(ROOT / '.ci'))
        try: import readme
        finally: sys.path.pop(0)
        assert (ROOT / 'README.md').read_text() == readme.render(), 'README.md is stale: run `python .ci/readme.py` and commit it'

    def ci_runs_readme_commands(self):
        "Every command .ci/run executes must appear verbatim in the README's set-up block."
        cmds = [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines()
                if l.strip() and not l.strip().startswith(('#', 'set ', 'cd ', 'export '))]
        readme = (ROOT / 'README.md').read_text()
        missing = [c for c in cmds if c not in readme]
        assert cmds and not missing, f'.ci/run runs commands the README does not show: {missing}'

def pytest_terminal_summary(terminalreporter):
    if not _TIMES: return
    tr = terminalreporter
    tr.section('notebook wall times')
    for name, t in sorted(_TIMES.items()): tr.write_line(f'{t:8.1f} s  {name}')
    tr.write_line(f'{sum(_TIMES.values()):8.1f} s  summed over {len(_TIMES)} notebooks (they run in parallel)')
