"""The README's curl examples for product engineers run, as written, with bash against a live
gunicorn (DEBUG off, the test database): an example that no longer works fails here.

What is run: every ```sh, ```bash, ```shell or ```console block that calls `curl` in the
README sections whose titles start with one of SECTIONS (and their subsections), so an example
added there later (recipients, devices, preferences) is run without being listed here. The
convention the examples follow (the README says it too):

- they reach the server as `$NOTIFIER_URL` (no trailing slash) with the key `$NOTIFIER_API_KEY`
  (a key of every scope here); the shell has nothing else from this process's environment;
- the blocks of a section run in order in one shell, as a reader pasting them into one terminal
  would: a variable one block sets (`MESSAGE_ID=$(curl ...)`) is there for the next;
- a curl must answer 2xx (curl's `--fail-with-body`), unless a line `# expect: 409` before it
  names the status it answers; a block that calls no curl, or an `# expect:` no curl consumes,
  fails;
- examples print the answer's body (no `-i`, `-o` or `-w` of their own); `# → ...` lines show
  what it looks like and are not compared.

What the examples may take for granted (EXAMPLE_DATA, made by the `readme_world` fixture):
users 42 and 43 with an email address, and the catalog's notification types (order.shipped).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from notifier.models import ApiScope
from notifier.services.api_keys import api_key_create
from tests.factories import UserFactory
from tests.gunicorn import API_SERVER_ENV, GunicornServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTIONS = ("From another service", "From a mobile app")
SHELLS = ("sh", "bash", "shell", "console")
EXPECT = re.compile(r"^\s*# expect: (\d{3})\s*$")
EXAMPLE_DATA = "users 42 and 43 with an email address; the catalog's notification types"

# Put before the examples: `curl` checks each answer's status, the `# expect:` lines set what
# it must be (through a file, so a curl in `$(...)` consumes it too), and each call is logged.
PRELUDE = r"""
set -euo pipefail
curl() {
  local expected out status
  expected=$(cat "$README_EXPECT"); : > "$README_EXPECT"
  out=$(command curl --silent --show-error --write-out '\n%{http_code}' "$@") || {
    echo "$README_WHERE: curl exited $?" >&2; return 1; }
  status=${out##*$'\n'}; out=${out%$'\n'*}
  echo "$README_WHERE $status" >> "$README_CALLS"
  printf '%s\n' "$out"
  if [[ -z $expected && $status == 2?? ]] || [[ $status == "$expected" ]]; then return 0; fi
  echo "$README_WHERE: answered $status, expected ${expected:-2xx}: $out" >&2
  return 1
}
readme_block() {
  if [[ -s $README_EXPECT ]]; then
    echo "$README_WHERE: '# expect: $(cat "$README_EXPECT")' but no curl after it" >&2; exit 1
  fi
  README_WHERE=$1
}
"""


@dataclass
class Example:
    line: int  # where the block starts in README.md
    code: str

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    def script(self) -> str:
        lines = [f"readme_block {self.where}"]
        for text in self.code.splitlines():
            expected = EXPECT.match(text)
            lines.append(f'echo {expected[1]} > "$README_EXPECT"' if expected else text)
        return "\n".join(lines)


@dataclass
class Section:
    title: str
    examples: list[Example] = field(default_factory=list)


def sections(text: str) -> list[Section]:
    """The README's sections named in SECTIONS (each with its subsections), with their curl
    blocks, in README order."""
    found: list[Section] = []
    current: Section | None = None
    level = 0
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = re.match(r"(#{2,6}) (.+)", line)
        fence = re.match(r"```(\w*)\s*$", line)
        if heading:
            depth = len(heading[1])
            if current is not None and depth <= level:
                current = None
            if current is None and heading[2].startswith(SECTIONS):
                current, level = Section(heading[2]), depth
                found.append(current)
        elif fence:
            end = lines.index("```", index + 1)
            code = "\n".join(lines[index + 1 : end])
            if current is not None and fence[1] in SHELLS and re.search(r"\bcurl\b", code):
                current.examples.append(Example(line=index + 1, code=code))
            index = end
        index += 1
    return found


README_SECTIONS = sections(README.read_text())


def test_the_readme_has_the_sections_and_their_examples() -> None:
    titles = [section.title for section in README_SECTIONS]
    assert any(title.startswith(SECTIONS[0]) for title in titles), titles
    assert all(section.examples for section in README_SECTIONS), [
        section.title for section in README_SECTIONS if not section.examples
    ]


@pytest.fixture
def readme_world() -> None:
    """EXAMPLE_DATA: what the README says its examples may take for granted."""
    for pk in (42, 43):
        UserFactory(pk=pk, email=f"user{pk}@example.com")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    silent: list[str]  # blocks that called no curl

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.silent


def run_section(section: Section, env: dict[str, str], scratch: Path) -> Run:
    """The section's examples in one bash, with only PATH, HOME, LANG and `env`."""
    expect_file, calls_file = scratch / "expect", scratch / "calls"
    expect_file.write_text("")
    calls_file.write_text("")
    script = "\n".join(
        [PRELUDE, *(example.script() for example in section.examples), "readme_block end"]
    )
    ran = subprocess.run(
        ["bash", "-c", script],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(scratch),
            "LANG": "C.UTF-8",
            **env,
            "README_EXPECT": str(expect_file),
            "README_CALLS": str(calls_file),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    called = {line.split()[0] for line in calls_file.read_text().splitlines()}
    silent = [example.where for example in section.examples if example.where not in called]
    return Run(ran.returncode, ran.stdout, ran.stderr, silent)


@pytest.mark.django_db(transaction=True)  # committed: the server's connection reads the rows
@pytest.mark.parametrize("section", README_SECTIONS, ids=lambda section: section.title)
def test_the_readme_examples_run_against_a_live_server(
    section: Section,
    readme_world: None,
    gunicorn_server: Callable[..., GunicornServer],
    tmp_path: Path,
) -> None:
    server = gunicorn_server(**API_SERVER_ENV)
    key = api_key_create(name="readme", scopes=ApiScope.values, rate_limit="1000000/s")
    run = run_section(
        section, {"NOTIFIER_URL": server.base_url, "NOTIFIER_API_KEY": key.token}, tmp_path
    )
    assert run.returncode == 0, (
        f"{section.title}: the examples failed\n{run.stderr}\n--- output\n{run.stdout}\n"
        f"--- server\n{server.tail(30)}"
    )
    assert not run.silent, f"blocks that called no curl: {run.silent}"


# --- The runner itself, with a stand-in curl that answers what it is told --------------------

FAKE_CURL = """#!/bin/sh
# Answers like curl --write-out '\\n%{http_code}': a body, then the status FAKE_STATUS.
printf '{"message": 7}\\n%s' "${FAKE_STATUS:-202}"
"""
MARKDOWN = """
## From another service: the HTTP API

```sh
# expect: 202
curl -X POST "$NOTIFIER_URL/api/v1/notify"
```

```python
curl = "not shell, not run"
```

### Reading it back

```sh
MESSAGE_ID=$(curl "$NOTIFIER_URL/x" | tr -dc 0-9)
test "$MESSAGE_ID" = 7
```

## Somewhere else

```sh
curl "$NOTIFIER_URL/not-in-a-section"
```
"""


def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, markdown: str, status: int) -> Run:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL)
    (bin_dir / "curl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    [section] = sections(markdown)
    return run_section(section, {"NOTIFIER_URL": "http://x", "FAKE_STATUS": str(status)}, tmp_path)


def test_the_runner_takes_a_sections_shell_blocks_with_their_subsections() -> None:
    [section] = sections(MARKDOWN)
    assert section.title == "From another service: the HTTP API"
    assert [example.code.splitlines()[0] for example in section.examples] == [
        "# expect: 202",
        'MESSAGE_ID=$(curl "$NOTIFIER_URL/x" | tr -dc 0-9)',
    ]


def test_the_runner_passes_examples_that_answer_as_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fake_run(tmp_path, monkeypatch, MARKDOWN, 202)
    assert run.ok, run.stderr


@pytest.mark.parametrize("status", [200, 409, 500])
def test_the_runner_fails_an_answer_other_than_the_expected_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    run = fake_run(tmp_path, monkeypatch, MARKDOWN, status)
    assert run.returncode != 0
    assert f"answered {status}, expected 202" in run.stderr


def test_the_runner_fails_a_non_2xx_answer_without_an_expectation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markdown = MARKDOWN.replace("# expect: 202\n", "")
    run = fake_run(tmp_path, monkeypatch, markdown, 404)
    assert run.returncode != 0
    assert "answered 404, expected 2xx" in run.stderr


def test_the_runner_fails_an_expectation_no_curl_consumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markdown = MARKDOWN.replace(
        'test "$MESSAGE_ID" = 7\n', 'test "$MESSAGE_ID" = 7\n# expect: 404\n'
    )
    run = fake_run(tmp_path, monkeypatch, markdown, 202)
    assert run.returncode != 0
    assert "'# expect: 404' but no curl after it" in run.stderr


def test_the_runner_fails_a_block_that_calls_no_curl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markdown = MARKDOWN.replace(
        'MESSAGE_ID=$(curl "$NOTIFIER_URL/x" | tr -dc 0-9)', "MESSAGE_ID=7  # curl"
    )
    run = fake_run(tmp_path, monkeypatch, markdown, 202)
    assert run.returncode == 0
    assert run.silent == ["README.md:15"]
