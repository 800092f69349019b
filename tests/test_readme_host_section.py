"""The README's "Add Notifier to your project" shows what the test host project (tests/host/)
really does: the same apps, the same settings, the same URL line, the same Celery lines."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "tests" / "host"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Add Notifier to your project")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def readme_code_lines() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", readme_section(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def marked(path: Path, name: str) -> list[str]:
    """The lines between `# --- notifier: <name> ---` and `# --- end ---`, without comments."""
    text = path.read_text()
    block = re.search(rf"# --- notifier: {name} ---\n(.*?)# --- end ---", text, re.S)
    assert block, f"{path} has no marked block {name!r}"
    lines = [line.split("  # noqa")[0].strip() for line in block[1].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def assigned(lines: list[str]) -> set[str]:
    return {m[1] for line in lines if (m := re.match(r"([A-Z_]+) = ", line))}


def test_the_readme_installs_the_apps_the_host_installs():
    readme_apps = [line for line in readme_code_lines() if re.fullmatch(r'"[\w.]+",', line)]
    assert readme_apps == marked(HOST / "settings.py", "INSTALLED_APPS")


def test_the_readme_sets_the_settings_the_host_sets():
    readme = assigned(readme_code_lines()) - {"INSTALLED_APPS", "app"}
    assert readme == assigned(marked(HOST / "settings.py", "settings"))


def test_the_readme_mounts_the_urls_as_the_host_does():
    [line] = marked(HOST / "urls.py", "urls")
    assert line in readme_code_lines()


def test_the_readme_configures_celery_as_the_host_does():
    lines = readme_code_lines()
    for line in marked(HOST / "celery.py", "celery"):
        assert line in lines, line
