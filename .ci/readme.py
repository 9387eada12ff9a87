#!/usr/bin/env python
"""Render README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not installable offline).

    python .ci/readme.py          # rewrite README.md
    python .ci/readme.py --check  # exit 1 if README.md is stale

Markdown cells are copied verbatim, except that links to `images/` (beside the notebook) become `nbs/images/`
(beside the README); code cells marked `#| hide` are dropped; other code cells
become ```python blocks followed by their text output. The test runner calls `render()` too.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = ['<!-- generated from nbs/index.ipynb by `python .ci/readme.py`: edit the notebook, not this file -->']
    for cell in nb['cells']:
        src = _src(cell).strip('\n')
        if cell['cell_type'] == 'markdown':
            parts.append(src.replace('](images/', '](nbs/images/').replace('src="images/', 'src="nbs/images/'))
        elif cell['cell_type'] == 'code':
            lines = src.splitlines()
            directives = [l for l in lines if l.startswith('#|')]
            if any(d.replace(' ', '') in ('#|hide', '#|exporti') for d in directives) or any('default_exp' in d for d in directives): continue
            body = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
            if body: parts.append(f'```python\n{body}\n```')
            for out in cell.get('outputs', []):
                text = out.get('text') or out.get('data', {}).get('text/plain')
                if text and 'image/png' not in out.get('data', {}):
                    text = ''.join(text) if isinstance(text, list) else text
                    parts.append(f'```\n{text.rstrip()}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text = render()
    readme = ROOT / 'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print('README.md is up to date' if ok else 'README.md is stale: run `python .ci/readme.py`')
        sys.exit(0 if ok else 1)
    readme.write_text(text)
    print(f'wrote {readme}')
