"""The test runner: `pytest` executes every notebook in `nbs/` in quick mode, plus repository checks.

    pytest                                  # everything (what CI runs)
    pytest nbs/01_forward_process.ipynb     # one notebook
    pytest -k "01 or 02"                    # a selection
    pytest --flags "slow cuda"              # also run cells marked #| slow / #| cuda
    pytest --full                           # run notebooks at full size (IN_TEST unset)

Each notebook runs as a student runs it in JupyterLab: top to bottom in a fresh Jupyter kernel (nbclient +
ipykernel, the python3 kernel), with IN_TEST=1 for quick mode and the cells carrying a flag from settings.ini's
`tst_flags` (or `#| eval: false`) left out unless forced with `--flags`. Notebooks are submitted in reading order
(index, 00, 01, ...), two at a time with one torch thread each (`--nb-workers N` to change; on two cores this beats
one notebook with two threads, since most tensors in quick mode are small). Wall times are printed at the end.
The repository checks fail when `ldm_edu/` differs from a fresh `nbdev_export`, when README.md is
stale against nbs/index.ipynb, when `.ci/run` and the README's set-up commands disagree, or when the docs site
(`ldm_edu.site`) has a broken link, a missing image or unrendered math, in the HTML and in headless Chromium
(skipped locally without Chromium; a failure under CI=true, where `.ci/run` installs it).
"""
import configparser, filecmp, json, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent
NBS = ROOT / 'nbs'
_TIMES: dict[str, float] = {}
_SITE: dict = {}

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

_RUNNER = r'''
import os, re, sys
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
fn, skip, force, timeout = sys.argv[1], set(sys.argv[2].split()), set(sys.argv[3].split()), float(sys.argv[4])
flags = skip - force
_DIR = re.compile(r'^\s*#\s*\|\s*([\w-]+):?\s*(.*)$')
def runs(cell):
    "nbdev test's rule: skip `nbdev_export()` calls, `#| eval: false`, and cells carrying a skipped flag."
    if cell.cell_type != 'code': return True
    if 'nbdev_export' + '(' in cell.source: return False
    direc = {}
    for line in cell.source.splitlines():
        if not line.strip(): continue
        m = _DIR.match(line)
        if not m: break
        direc[m.group(1)] = m.group(2).split()
    if (direc.get('eval') or [''])[0].lower() == 'false': return False
    return not (flags & direc.keys())
nb = nbformat.read(fn, as_version=4)
nb.cells = [c for c in nb.cells if runs(c)]
client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': os.path.dirname(os.path.abspath(fn))}})
try: client.execute()
except CellExecutionError as e: sys.stderr.write(re.sub(r'\x1b\[[0-9;]*m', '', str(e))); sys.exit(1)   # the traceback, without colour codes
except (CellTimeoutError, DeadKernelError) as e: sys.stderr.write(f'{type(e).__name__}: {e}'); sys.exit(1)
'''

def _run_notebook(path: Path, opt, skip: str, env: dict) -> tuple[int, str, str, float]:
    "Execute one notebook in a fresh Jupyter kernel, driven by nbclient in a child process (a kernel exits with its parent)."
    start = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, '-c', _RUNNER, str(path), skip, opt.flags, str(opt.nb_timeout)],
                           cwd=NBS, env=env, capture_output=True, text=True, timeout=opt.nb_timeout + 60)
        return r.returncode, r.stdout, r.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return -1, '', f'{path.name} did not finish within {opt.nb_timeout:.0f} s', time.perf_counter() - start

def _reading_order(p: Path): return (0 if p.stem == 'index' else 1 if p.name[:1].isdigit() else 2, p.name)

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
        # the kernel imports this checkout's ldm_edu (as an editable install would) and is the python3 kernel of this Python
        env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
        env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
        if workers > 1: env.setdefault('OMP_NUM_THREADS', '1')
        _POOL = ThreadPoolExecutor(workers)
        skip = _cfg().get('tst_flags', '')
        for item in getattr(config, '_nb_items', []):
            _FUTURES[item.path] = _POOL.submit(_run_notebook, item.path, opt, skip, env)
    return _FUTURES

def pytest_collection_modifyitems(session, config, items):
    "Notebooks run (and report) in reading order: index, 00, 01, ...; the repository checks after them."
    nb_items = sorted((i for i in items if isinstance(i, NotebookItem)), key=lambda i: _reading_order(i.path))
    items[:] = nb_items + [i for i in items if not isinstance(i, NotebookItem)]
    config._nb_items = nb_items

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
        for name in ('export_in_sync', 'compiles_without_warnings', 'readme_in_sync', 'ci_runs_readme_commands',
                     'site_in_browser'):
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

    def compiles_without_warnings(self):
        "Every module and tool compiles with warnings as errors (Python 3.12 warns on an invalid escape like '\\m')."
        import warnings
        bad = []
        for f in sorted([*(ROOT / 'ldm_edu').rglob('*.py'), *(ROOT / 'tools').glob('*.py'), ROOT / 'conftest.py']):
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                try: compile(f.read_text(), str(f), 'exec')
                except (SyntaxError, SyntaxWarning, DeprecationWarning) as e: bad.append(f'{f.relative_to(ROOT)}: {e}')
        assert not bad, 'modules that warn or fail when compiled:\n' + '\n'.join(bad)

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

    def site_in_browser(self):
        """Render the whole docs site (ldm_edu.site.render_site), check every page's links, images and math in the HTML,
        then open index.html and 01_forward_process.html in headless Chromium and check what it shows."""
        from ldm_edu.site import SITE_MANIFEST, browser_check, check_site, find_chromium, render_site
        chromium = find_chromium()
        if chromium is None:
            msg = 'no Chromium for the browser check of the docs site: apt-get install chromium (or set $CHROMIUM)'
            if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'): pytest.fail(msg + '; .ci/run installs it, so under CI=true this is a failure')
            pytest.skip(msg)
        work = Path(tempfile.mkdtemp(prefix='ldm-edu-site-'))
        t0 = time.perf_counter(); out = render_site(NBS, work / 'site'); t_render = time.perf_counter() - t0
        man = json.loads((out / SITE_MANIFEST).read_text())
        chk = check_site(out)
        assert not chk['problems'], 'docs site problems:\n' + '\n'.join(chk['problems'][:30])
        t0 = time.perf_counter(); seen = {}
        for page in ('index.html', '01_forward_process.html'):
            r = seen[page] = browser_check(out / page, work / page.replace('.html', '.png'), chromium)
            html_counts = chk['pages'][page]
            assert r['math'] == html_counts['math'] > 0 and r['math_empty'] == 0, (page, 'math not laid out', r)
            assert r['mfrac_stacked'] == r['mfrac'], (page, 'fractions not stacked: no MathML layout', r)
            assert r['images'] == html_counts['images'] and not r['images_broken'], (page, 'images did not load', r)
            assert r['nav_links'] == len(man['pages']) + 1, (page, 'sidebar does not link every page', r)
            assert tuple(r['screenshot_size']) == (1280, 1600) and r['screenshot_std'] > 10, (page, 'blank screenshot', r)
            assert all(g >= 8 for g in r['code_gaps']), (page, 'a code block touches the paragraph after it', r['code_gaps'])
        assert seen['01_forward_process.html']['mfrac'] > 0 and seen['01_forward_process.html']['images'] > 0
        assert seen['index.html']['code_gaps'], 'the home page has no code block in prose to measure'
        _SITE.update(pages=len(man['pages']), formulas=man['formulas'], render_s=t_render, browser_s=time.perf_counter() - t0,
                     dir=str(work), chromium=chromium)

def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if _SITE:
        tr.section('docs site')
        tr.write_line(f"rendered {_SITE['pages']} pages ({_SITE['formulas']} formulas as MathML) in {_SITE['render_s']:.1f} s; "
                      f"Chromium check of 2 pages {_SITE['browser_s']:.1f} s; site and screenshots in {_SITE['dir']}")
    if not _TIMES: return
    tr.section('notebook wall times')
    for name, t in sorted(_TIMES.items()): tr.write_line(f'{t:8.1f} s  {name}')
    tr.write_line(f'{sum(_TIMES.values()):8.1f} s  summed over {len(_TIMES)} notebooks (they run in parallel)')
