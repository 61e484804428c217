"""The docs cannot rot: every command they show is checked, the cheap ones are run, every link resolves.

Every fenced shell block (```sh, ```bash, ```shell, ```console) of README.md, docs/*.md and
dbt/README.md is split into commands. Each command's program must be on the venv's PATH, or
`make`, or in NOT_IN_VENV with the reason it may be shown. Then:

- `make <target> [VAR=...]` names a Makefile target and variables its recipes use;
  `BENCH_ARGS` parses with the benchmark's own parser;
- `etl-assets ...` parses with the real click command of `etl_assets.cli` (and `etl-assets
  bench ...` with the benchmark's argparse parser), without running anything;
- click programs (`dagster`, `dg`, `dagster-webserver`, `dagster-daemon`, `dagster-celery`,
  `celery`, `dagster-webserver-debug`, `dbt`) parse with their real click commands, down to the
  sub-command, without invoking them;
- `python -c` code compiles; `python -m pytest` names test files that exist;
- the cheap, safe ones run in a scratch instance (temporary DAGSTER_HOME, landing zone, DuckDB
  warehouse and discovered-objects file): `--help`, `generate-sample`, `catalog refresh`, `sql`,
  `audit`, one `materialize --folder F --object O`, and the `python -c` queries of the tables it
  loads; where a ```console block shows a run command's output, its first line (the header) must
  be the real one.

Beside the commands: every relative link (and its #anchor) resolves and every repository path
the text writes out exists; README.md links every docs/*.md page, shows its pictures and the
quick-start targets, is at most 200 lines, and its layout names only what exists and every
package; every test the docs name exists; docs/operating.md lists every etl-assets command; the
ETL_ASSETS_* variables the code reads are the ones docs/configuration.md lists (and the docs name
no other), and its `<repo>/data/...` defaults are where the code puts them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from etl_assets import cli
from benchmarks import run as bench

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "dbt" / "README.md"]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
README_MAX_LINES = 200

# Programs the docs may show that are not on the venv's PATH, and why.
NOT_IN_VENV = {
    "export": "shell builtin: sets the environment the following commands read",
    "cd": "shell builtin",
    "cp": "coreutils: copies an instance file into DAGSTER_HOME",
    "cat": "coreutils: shows a refused file's reason",
    "curl": "an HTTP client, to read the audit endpoint from another shell",
    "apt-get": "Debian's package manager: installs Chromium for the browser test",
}
# Programs on the venv whose arguments are parsed by their real click command (module:attribute).
CLICK_PROGRAMS = {
    "dagster": "dagster._cli:cli",
    "dg": "dagster_dg_cli.cli:cli",
    "dagster-webserver": "dagster_webserver.cli:cli",
    "dagster-webserver-debug": "dagster_webserver.debug:webserver_debug_command",
    "dagster-daemon": "dagster._daemon.cli:cli",
    "dagster-celery": "dagster_celery.cli:main",
    "celery": "celery.bin.celery:celery",
    "dbt": "dbt.cli.main:cli",
}
# Pages another change is still writing: a link to one may point nowhere only while it is absent.
PENDING_PAGES: dict[str, str] = {}  # a page linked before it is written: path -> what it will hold
# etl-assets sub-commands that are cheap and touch only the scratch environment: these are run.
RUN_SUBCOMMANDS = {("generate-sample",), ("catalog", "refresh"), ("sql",), ("audit",)}


@dataclass
class Command:
    doc: Path
    line: int  # where the command starts in the doc
    argv: list[str]  # program and arguments, environment assignments removed
    cwd: Path  # after any `cd` earlier in the block
    env: dict[str, str] = field(default_factory=dict)  # VAR=value before the program
    output: list[str] = field(default_factory=list)  # a ```console block's lines after the command
    earlier: set[str] = field(default_factory=set)  # arguments of the block's earlier commands

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}: {shlex.join(self.argv)}"

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name


def fenced_blocks(text: str):
    """(language, first line number of the body, body lines) of every fenced block, indented or not."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\w*)", lines[i])
        if not opening:
            i += 1
            continue
        indent, language = len(opening.group(1)), opening.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        yield language, i + 2, [line[indent:] for line in lines[i + 1:end]]
        i = end + 1


def logical_lines(body: list[str], console: bool):
    """(line number offset, text, output lines) of each command: continuation lines joined, quotes balanced."""
    i = 0
    while i < len(body):
        raw = body[i]
        if console:
            if not raw.startswith("$ "):
                i += 1
                continue
            raw = raw[2:]
        start, text = i, raw
        while i + 1 < len(body) and (text.rstrip().endswith("\\") or not _balanced(text)):
            i += 1
            if text.rstrip().endswith("\\"):  # a continued line
                text = text.rstrip().removesuffix("\\") + " " + body[i]
            else:  # a quoted argument spanning lines
                text = text + "\n" + body[i]
        i += 1
        output = []
        while console and i < len(body) and not body[i].startswith("$ "):
            output.append(body[i])
            i += 1
        if text.strip() and not text.lstrip().startswith("#"):
            yield start, text, output


def _balanced(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
        return True
    except ValueError:
        return False


def split_commands(text: str) -> list[list[str]]:
    """A shell line's simple commands: split at unquoted &&, ||, |, ; and comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", "|", ";", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def doc_commands() -> list[Command]:
    commands = []
    for doc in DOCS:
        for language, first, body in fenced_blocks(doc.read_text()):
            if language not in SHELL_LANGUAGES:
                continue
            cwd, earlier = REPO, set()
            for offset, text, output in logical_lines(body, console=language == "console"):
                for tokens in split_commands(text):
                    env = {}
                    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
                        name, _, value = tokens.pop(0).partition("=")
                        env[name] = value
                    if not tokens:
                        continue
                    commands.append(Command(doc, first + offset, tokens, cwd, env, output, set(earlier)))
                    earlier.update(tokens[1:])
                    if tokens[0] == "cd":
                        cwd = (cwd / tokens[1]).resolve()
    return commands


COMMANDS = doc_commands()


def _ids(commands):
    return [f"{c.doc.relative_to(REPO)}:{c.line}:{c.program}" for c in commands]


def test_the_docs_show_commands_of_every_kind_this_test_checks():
    """The parser finds the commands (so the checks below are not vacuous)."""
    programs = {c.program for c in COMMANDS}
    assert {"make", "etl-assets", "dagster", "dg", "python", "dagster-celery", "celery"} <= programs, programs
    targets = {c.argv[1] for c in COMMANDS if c.program == "make" and len(c.argv) > 1}
    assert {"run", "test", "dev", "bench"} <= targets
    assert any(c.output for c in COMMANDS), "no ```console block with output"


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_every_program_is_on_the_venv_or_allowed(command: Command):
    program = command.argv[0]
    if "/" in program:
        assert (command.cwd / program).is_file(), f"{command.where()}: {program} does not exist"
        assert Path(os.path.normpath(command.cwd / program)).parent == VENV_BIN, f"{command.where()}: not the venv's"
    elif program != "make":
        assert (VENV_BIN / program).is_file() or program in NOT_IN_VENV, (
            f"{command.where()}: {program} is neither on the venv's PATH nor in NOT_IN_VENV")


def makefile_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    variables = set(re.findall(r"\$\((\w+)\)", text))
    return targets, variables


MAKE_COMMANDS = [c for c in COMMANDS if c.program == "make"]


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=_ids(MAKE_COMMANDS))
def test_make_commands_name_real_targets_and_variables(command: Command):
    targets, variables = makefile_targets_and_variables()
    for argument in command.argv[1:]:
        name, assigned, value = argument.partition("=")
        if assigned:
            assert name in variables, f"{command.where()}: the Makefile uses no variable {name}"
            if name == "BENCH_ARGS":
                parse_argparse(bench.parser(), shlex.split(value), command)
        else:
            assert argument in targets, f"{command.where()}: no Makefile target {argument!r}"


def parse_argparse(parser: argparse.ArgumentParser, argv: list[str], command: Command) -> argparse.Namespace:
    """Parse as the program would; a usage error fails the test with argparse's own message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            return argparse.Namespace()
        pytest.fail(f"{command.where()}: {stderr.getvalue().strip()}")


ETL_COMMANDS = [c for c in COMMANDS if c.program == "etl-assets"]


@pytest.mark.parametrize("command", ETL_COMMANDS, ids=_ids(ETL_COMMANDS))
def test_etl_assets_commands_parse_with_the_real_parser(command: Command):
    argv = [os.path.expandvars(a) for a in command.argv[1:]]
    if argv[:1] == ["bench"]:
        parse_argparse(bench.parser(), argv[1:], command)
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints, then exits 0
            path = parse_click(cli.cli, argv, "etl-assets")
    except click.exceptions.Exit as exit_:
        assert exit_.exit_code == 0, command.where()
        return
    except click.ClickException as error:
        pytest.fail(f"{command.where()}: {error.format_message()}")
    assert path[0] == "etl-assets"


def parse_click(cmd: click.Command, args: list[str], name: str, parent=None) -> list[str]:
    """Resolve sub-commands and parse every level's options, as click would before invoking."""
    ctx = cmd.make_context(name, list(args), parent=parent, resilient_parsing=False)
    if isinstance(cmd, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if rest:
            sub_name, sub, rest = cmd.resolve_command(ctx, rest)
            return [name, *parse_click(sub, rest, sub_name, ctx)]
    return [name]


CLICK_COMMANDS = [c for c in COMMANDS if c.program in CLICK_PROGRAMS]


@pytest.mark.parametrize("command", CLICK_COMMANDS, ids=_ids(CLICK_COMMANDS))
def test_click_programs_parse_with_their_real_commands(command: Command, monkeypatch):
    module, attribute = CLICK_PROGRAMS[command.program].split(":")
    group = getattr(importlib.import_module(module), attribute)
    monkeypatch.chdir(command.cwd)  # paths such as -w workspace.yaml are checked from where the doc runs it
    try:
        path = parse_click(group, command.argv[1:], command.program)
    except click.BadParameter as error:
        missing = re.match(r"Path '(.*)' does not exist", error.message or "")
        if not (missing and missing.group(1) in command.earlier):  # a file an earlier command writes
            pytest.fail(f"{command.where()}: {error.format_message()}")
        return
    except click.ClickException as error:
        pytest.fail(f"{command.where()}: {error.format_message()}")
    assert path[0] == command.program


PYTHON_COMMANDS = [c for c in COMMANDS if c.program.startswith("python")]


@pytest.mark.parametrize("command", PYTHON_COMMANDS, ids=_ids(PYTHON_COMMANDS))
def test_python_commands_compile_or_name_real_modules_and_files(command: Command):
    args = command.argv[1:]
    if args[0] == "-c":
        compile(args[1], command.where(), "exec")
    elif args[0] == "-m":
        assert importlib.util.find_spec(args[1]) is not None, f"{command.where()}: no module {args[1]}"
        if args[1] == "pytest":
            for argument in args[2:]:
                if not argument.startswith("-"):
                    assert (command.cwd / argument.split("::")[0]).exists(), f"{command.where()}: no {argument}"
    else:
        assert (command.cwd / args[0]).is_file(), f"{command.where()}: no script {args[0]}"


def test_the_checks_refuse_what_is_wrong():
    """A synthetic page: the parser splits it as a shell would, and each check fails on a wrong command."""
    body = ["export A=1 && .venv/bin/etl-assets sql \\", "    --target duckdb --object Task  # a comment",
            ".venv/bin/python -c \"print(", "  1)\" | head -1", "$ not a console line here"]
    lines = list(logical_lines(body, console=False))
    assert [line[0] for line in lines] == [0, 2, 4]
    assert split_commands(lines[0][1]) == [["export", "A=1"],
                                           [".venv/bin/etl-assets", "sql", "--target", "duckdb", "--object", "Task"]]
    assert split_commands(lines[1][1])[0] == [".venv/bin/python", "-c", "print(\n  1)"]
    console = list(logical_lines(["$ etl-assets audit", "header", "row", "$ etl-assets audit --json"], console=True))
    assert [(text, output) for _, text, output in console] == [("etl-assets audit", ["header", "row"]),
                                                               ("etl-assets audit --json", [])]
    wrong = Command(REPO / "docs" / "synthetic.md", 1, ["etl-assets", "materialize", "--nope"], REPO)
    with pytest.raises(pytest.fail.Exception, match="No such option '--nope'"):
        test_etl_assets_commands_parse_with_the_real_parser(wrong)
    with pytest.raises(pytest.fail.Exception, match="'oracle' is not one of"):
        test_etl_assets_commands_parse_with_the_real_parser(
            Command(wrong.doc, 1, ["etl-assets", "sql", "--target", "oracle", "--object", "Task"], REPO))
    with pytest.raises(pytest.fail.Exception, match="No such command 'materialise' .did you mean materialize"):
        test_etl_assets_commands_parse_with_the_real_parser(Command(wrong.doc, 1, ["etl-assets", "materialise"], REPO))
    with pytest.raises(click.NoSuchOption):
        parse_click(importlib.import_module("dagster._cli").cli, ["job", "backfill", "--nope"], "dagster")
    with pytest.raises(click.UsageError, match="No such command"):
        parse_click(importlib.import_module("dagster._cli").cli, ["instance", "concurrency", "frob"], "dagster")
    with pytest.raises(AssertionError, match="no Makefile target 'deploy'"):
        test_make_commands_name_real_targets_and_variables(Command(wrong.doc, 1, ["make", "deploy"], REPO))
    with pytest.raises(AssertionError, match="uses no variable"):
        test_make_commands_name_real_targets_and_variables(Command(wrong.doc, 1, ["make", "bench", "ROWS=1"], REPO))
    with pytest.raises(AssertionError, match="neither on the venv"):
        test_every_program_is_on_the_venv_or_allowed(Command(wrong.doc, 1, ["psql", "-c", "select 1"], REPO))
    with pytest.raises(AssertionError, match="no module"):
        test_python_commands_compile_or_name_real_modules_and_files(
            Command(wrong.doc, 1, ["python", "-m", "etl_assets.nowhere"], REPO))
    assert slug("The `warehouse` pool, step by step") == "the-warehouse-pool-step-by-step"


# Running the cheap commands in a scratch environment.

def is_run(command: Command) -> bool:
    argv = command.argv[1:]
    if command.program == "etl-assets":
        return ("--help" in argv or any(tuple(argv[:len(p)]) == p for p in RUN_SUBCOMMANDS)
                or (argv[0] == "materialize" and "--folder" in argv and "--object" in argv))
    return command.program.startswith("python") and argv[0] == "-c" and "salesforce.task" in argv[1]


def run_order(command: Command) -> int:
    """Landing data first, then the catalog, the load, then what reads the load."""
    argv = command.argv[1:]
    order = {"generate-sample": 0, "catalog": 1, "materialize": 2}
    return order.get(argv[0], 3) if command.program == "etl-assets" else 4


RUN_COMMANDS = sorted((c for c in COMMANDS if is_run(c)), key=run_order)


@dataclass
class Outcome:
    status: int | str  # the exit status, or the exception an in-process command raised
    out: str
    err: str


@pytest.fixture(scope="module")
def scratch_outcomes(tmp_path_factory) -> dict[int, Outcome]:
    """Every runnable command, run once in order in the scratch instance docs/operating.md describes
    (with a copy of the discovered-objects state), whichever of their tests are selected."""
    root = tmp_path_factory.mktemp("docs")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    (root / "data").mkdir()
    shutil.copy(REPO / "etl_assets" / "salesforce" / "discovered.yaml", root / "discovered.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        ETL_ASSETS_LANDING_ROOT=str(root / "landing"),
        # the docs' queries open data/warehouse.duckdb from the directory they run in: the same file
        ETL_ASSETS_DUCKDB_PATH=str(root / "data" / "warehouse.duckdb"),
        ETL_ASSETS_SALESFORCE_DISCOVERED=str(root / "discovered.yaml"),
        ETL_ASSETS_TOTESYS_DUCKDB_PATH=str(root / "data" / "totesys.duckdb"),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return {id(command): run_in_scratch(command, root, env) for command in RUN_COMMANDS}


def run_in_scratch(command: Command, root: Path, scratch_env: dict[str, str]) -> Outcome:
    env = scratch_env | command.env
    argv = [re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), a) for a in command.argv]
    if command.program != "etl-assets" or argv[1] == "materialize":
        # a process of its own: materialize imports the code location, which reads the environment then
        done = subprocess.run([str(VENV_BIN / command.program), *argv[1:]], check=False, cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        return Outcome(done.returncode, done.stdout, done.stderr)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name in [k for k in os.environ if k.startswith(("ETL_ASSETS_", "DAGSTER_"))]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(root)
        try:
            status = cli.main(argv[1:])
        except SystemExit as exit_:  # --help
            status = exit_.code
        except Exception as error:  # noqa: BLE001 - reported by the command's test
            status = f"{type(error).__name__}: {error}"
    return Outcome(status, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("command", RUN_COMMANDS, ids=_ids(RUN_COMMANDS))
def test_the_cheap_commands_run(command: Command, scratch_outcomes):
    outcome = scratch_outcomes[id(command)]
    assert outcome.status == 0, f"{command.where()}: {outcome.status}\n{outcome.err[-3000:]}"
    out = outcome.out
    assert out.strip(), f"{command.where()}: printed nothing"
    argv = command.argv[1:]
    if "--help" in argv or "-h" in argv:  # click's usage line (the benchmark's is argparse's: lower case)
        usage = f"usage: etl-assets {' '.join(a for a in argv if not a.startswith('-'))}"
        assert out.lower().startswith(usage), out[:200]
        return
    if argv[:1] == ["sql"]:
        target = argv[argv.index("--target") + 1]
        assert out.startswith(f"-- Load of {argv[argv.index('--object') + 1]}"), out[:200]
        assert "-- transaction: all of it or nothing" in out, f"{command.where()}: no transaction in the plan"
        bulk_load = {"duckdb": "read_parquet", "postgres": "COPY", "redshift": "IAM_ROLE"}[target]
        assert bulk_load in out, f"{command.where()}: no {bulk_load} in the plan"
    if argv[:1] == ["materialize"]:
        assert ": ok (" in out and "\nsalesforce." in out, f"{command.where()}: {out}"
    documented = [line for line in command.output if line.strip()]
    if documented:  # the header of the output the doc shows is the real one
        assert out.splitlines()[0].split() == documented[0].split(), (
            f"{command.where()}: the doc shows\n{documented[0]}\nbut it prints\n{out.splitlines()[0]}")


def test_the_scratch_commands_cover_the_load_the_docs_show():
    """The run list is not empty by accident: a sample, a load of one object, its query and the plans."""
    shown = [shlex.join(c.argv[1:3]) for c in RUN_COMMANDS]
    assert any(s.startswith("generate-sample") for s in shown)
    assert any(s.startswith("materialize") for s in shown)
    assert any(s.startswith("sql") for s in shown)
    assert any(c.program.startswith("python") for c in RUN_COMMANDS)


# Links, pages and names.

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_every_relative_link_points_at_an_existing_file_and_heading(doc: Path):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    links = LINK.findall(text)
    for target in links:
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        pending = str(resolved.relative_to(REPO)) in PENDING_PAGES if resolved.is_relative_to(REPO) else False
        if pending and not resolved.exists():
            continue
        assert resolved.exists(), f"{doc.relative_to(REPO)}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(resolved), f"{doc.relative_to(REPO)}: link to {target}: no such heading"


# Repository paths the docs mention that are not files, and what they are.
NOT_PATHS = {"etl_assets/staging": "the default S3 key prefix of Redshift staging (ETL_ASSETS_REDSHIFT_STAGING_PREFIX)"}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_every_repository_path_the_docs_mention_exists(doc: Path):
    """`etl_assets/warehouse/base.py`, deploy/celery.yaml ...: written out in the text, not only linked."""
    mentioned = re.findall(r"(?<![\w/.<$])((?:etl_assets|etl_assets_tests|dbt|deploy|benchmarks|docs)/[\w./-]*[\w/])",
                           doc.read_text())
    missing = {m for m in mentioned if not (REPO / m).exists() and m not in NOT_PATHS and m not in PENDING_PAGES}
    assert not missing, f"{doc.relative_to(REPO)} mentions {sorted(missing)}, which do not exist"


def test_the_readme_is_short_and_links_every_page_and_its_pictures():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, f"README.md has {len(readme.splitlines())} lines"
    linked = {(REPO / target.partition("#")[0]).resolve() for target in LINK.findall(readme)}
    pages = set((REPO / "docs").glob("*.md")) | {REPO / p for p in PENDING_PAGES}
    missing = sorted(str(p.relative_to(REPO)) for p in pages if p.resolve() not in linked)
    assert not missing, f"README.md does not link {missing}"
    pictures = [t for t in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)]
    assert "docs/images/architecture.png" in pictures
    for picture in pictures:
        assert (REPO / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{picture} is not a PNG"
    assert (REPO / "docs" / "images" / "architecture.svg").is_file(), "the picture's source"
    for make in ("make run", "make test", "make dev", "make bench"):
        assert f"\n{make} " in readme, f"README.md's quick start does not show {make}"


def test_the_operating_page_lists_every_etl_assets_command():
    commands = cli.cli.commands
    page = (REPO / "docs" / "operating.md").read_text()
    table = page[page.index("## The commands"):page.index("## The UI")]
    missing = [name for name in commands if f"`{name}`" not in table and f"`{name} " not in table]
    assert len(commands) >= 10 and not missing, f"docs/operating.md's command table lacks {missing}"


def test_the_documented_default_paths_are_where_the_code_puts_them():
    """docs/configuration.md says `<repo>/data/...`: the code's defaults are under the repository's data/."""
    from etl_assets import settings

    code = "\n".join(p.read_text() for p in (REPO / "etl_assets").rglob("*.py"))
    in_code = set(re.findall(r'DATA_DIR / "([\w.]+)"', code))
    documented = set(re.findall(r"`<repo>/data/([\w.]+)`", (REPO / "docs" / "configuration.md").read_text()))
    assert in_code and in_code <= documented, f"defaults under data/ the page does not give: {in_code - documented}"
    assert settings.DATA_DIR == REPO / "data", (
        f"etl_assets.settings.DATA_DIR is {settings.DATA_DIR}, not {REPO / 'data'} (where make, dbt/profiles.yml "
        "and the docs put data/)")


def test_the_readme_layout_names_what_is_there():
    """Every file and folder the layout names exists; every package of etl_assets/ is named."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    block = next(body for language, _, body in fenced_blocks(layout) if language == "")
    named = set()
    for line in block:
        top = re.match(r"^(\S+/)", line)  # a top-level entry: etl_assets/, dbt/, benchmarks/results/ ...
        if top:
            assert (REPO / top.group(1)).is_dir(), f"README layout: no {top.group(1)}"
        named.update(re.findall(r"\b([a-z_][a-z_.]*\.(?:py|yaml|yml|sql))\b", line))
        named.update(n.rstrip("/") for n in re.findall(r"^\s+([a-z_]+/)", line))
    everything = {p.name for top in ("etl_assets", "etl_assets_tests", "dbt", "deploy") for p in (REPO / top).rglob("*")}
    assert not named - everything, f"README layout names what is not there: {sorted(named - everything)}"
    packages = {p.parent.name for p in (REPO / "etl_assets").glob("*/__init__.py")}
    assert packages <= named, f"README layout does not name {sorted(packages - named)}"
    assert len(named) > 40


def test_every_test_the_docs_name_exists():
    tests = REPO / "etl_assets_tests"
    defined = {p.name: set(re.findall(r"^(?:async )?def (test_\w+)", p.read_text(), re.MULTILINE))
               for p in tests.glob("test_*.py")}
    every = set().union(*defined.values())
    named = 0
    for doc in DOCS:
        text = doc.read_text()
        last_file = None
        for file, case, bare in re.findall(r"(test_\w+\.py)?::(test_\w+)|`(test_\w+)`", text):
            named += 1
            if case:
                last_file = file or last_file
                assert last_file in defined, f"{doc.name}: {file or '::' + case}: no test file {last_file}"
                assert case in defined[last_file], f"{doc.name}: no test {last_file}::{case}"
            else:
                assert bare in every, f"{doc.name}: no test named {bare}"
        for file in re.findall(r"\b(test_\w+\.py)\b", text):
            assert file in defined, f"{doc.name}: no test file {file}"
    assert named > 20, "the docs name the tests that prove them"


VARIABLE = re.compile(r"\bETL_ASSETS_[A-Z0-9]+(?:_[A-Z0-9]+)*(?:_\*)?")
# A name the code completes at run time, such as "ETL_ASSETS_PG_" + "HOST".
PREFIX = re.compile(r"\b(ETL_ASSETS_[A-Z0-9_]*_)[\"']")


def variables_in(paths) -> tuple[set[str], set[str]]:
    """(the variable names spelled out, the prefixes names are made from) in these files."""
    texts = [p.read_text() for p in paths]
    prefixes = {m for text in texts for m in PREFIX.findall(text)} - {"ETL_ASSETS_"}
    names = {v for text in texts for v in VARIABLE.findall(text)}
    return {n for n in names if n + "_" not in prefixes}, prefixes


def documented_variables(page: Path) -> set[str]:
    """Names in the page, with a table row's `_SUFFIX` shorthands expanded from the row's full names."""
    names = set()
    for line in page.read_text().splitlines():
        full = VARIABLE.findall(line)
        names.update(full)
        for suffix in re.findall(r"`(_[A-Z0-9_]+)`", line):
            for name in full:
                parts = name.split("_")
                names.update("_".join(parts[:i]) + suffix for i in range(3, len(parts)))
    return names


def test_the_configuration_page_lists_every_variable_the_code_reads():
    code = [*(REPO / "etl_assets").rglob("*.py"), REPO / "dbt" / "profiles.yml", *(REPO / "deploy").glob("*.yaml")]
    read, prefixes = variables_in(code)
    assert {"ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_EXECUTOR", "ETL_ASSETS_TOTESYS_CRON"} <= read
    listed = documented_variables(REPO / "docs" / "configuration.md")
    assert not read - listed, f"docs/configuration.md does not list {sorted(read - listed)}"
    for prefix in prefixes:
        assert any(name.startswith(prefix) for name in listed), f"docs/configuration.md lists no {prefix}*"
    tests, _ = variables_in((REPO / "etl_assets_tests").glob("*.py"))
    for doc in DOCS:
        text = doc.read_text()
        # docs/cli.md shows the line a misspelt variable gets: that name is meant to be unknown
        misspelt = set(re.findall(r"\b(ETL_ASSETS_\w+) is set but etl_assets reads no such variable", text))
        named = set(VARIABLE.findall(text)) - misspelt
        unknown = {v for v in named - read - tests  # ETL_ASSETS_PG_HOST from a prefix, or ETL_ASSETS_TOTESYS_PG_*
                   if not any(v.startswith(p) for p in prefixes)
                   and not (v.endswith("_*") and any(r.startswith(v[:-1]) for r in read | prefixes))}
        assert not unknown, f"{doc.relative_to(REPO)} names variables nothing reads: {sorted(unknown)}"
