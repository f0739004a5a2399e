"""The documentation agrees with the repository.

README.md stays one page; every relative link and image in README.md, CHANGELOG.md and docs/
resolves (anchors included); every config file, variant, family, command-line flag and
``jaxgen.*`` name that the docs (and train.py's and sample.py's docstrings, for configs) mention
exists. Nothing here compiles a JAX program.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import unicodedata
from pathlib import Path

import pytest
from support import ROOT, config_module

import jaxgen.engine.config  # noqa: F401 (configs/common.py imports it: a one-off 4 s import)
from jaxgen.families import FAMILIES, get_family

README = ROOT / "README.md"
README_MAX_LINES = 200
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
# CHANGELOG.md names config files that are gone on purpose; every other page names live ones.
LIVE_PAGES = [p for p in PAGES if p.name != "CHANGELOG.md"]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
CONFIG_REF = re.compile(r"configs/(\w+)\.py(?::([A-Za-z0-9_,]+))?")
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)(?=[=\s\]\"'`|)]|$)")
DEFINED_FLAG = re.compile(r"DEFINE_\w+\(\s*\"([\w-]+)\"")
JAXGEN_NAME = re.compile(r"`(jaxgen(?:\.\w+)+)")
FAMILY_LINE = re.compile(r"^Famil(?:y|ies) ((?:`\w+`(?:,? and |, )?)+)")
ABSL_FLAGS = {"help", "helpfull", "helpshort", "verbosity"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _split_fences(text: str) -> tuple[list[str], list[str]]:
    """``(prose lines, code lines)`` of a markdown text (fenced blocks are code)."""
    prose, code, in_code = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_code = not in_code
            continue
        (code if in_code else prose).append(line)
    return prose, code


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lowercased, punctuation other than ``-``
    and ``_`` dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(
        c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN" or c.isalnum()
    )
    return kept.replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    prose, _ = _split_fences(path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = _anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def _links(path: Path) -> list[str]:
    prose, _ = _split_fences(path.read_text())
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in prose)  # not inside inline code
    return LINK.findall(text)


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_rel(dest)})")
    return broken


def test_readme_is_one_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_and_images_resolve(page):
    assert _links(page) or page.name == "CHANGELOG.md", f"{_rel(page)} links nowhere"
    assert _broken_links(page) == []


def test_the_anchor_rule_matches_githubs():
    assert _anchor("What VQ-GAN's losses buy: `vq.seed_from_data`") == (
        "what-vq-gans-losses-buy-vqseed_from_data"
    )
    assert _anchor("Guidance trade-off on MNIST: 100% at w = 3") == (
        "guidance-trade-off-on-mnist-100-at-w--3"
    )


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) ![gone](img/none.png) [bad](there.md#nope)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert [b.split(" ")[0] for b in _broken_links(page)] == ["img/none.png", "there.md#nope"]


def _config_refs() -> set[tuple[str, str]]:
    """``(file stem, argument)`` of every config the live pages and the scripts' docstrings name."""
    texts = [page.read_text() for page in LIVE_PAGES]
    texts += [
        ast.get_docstring(ast.parse((ROOT / s).read_text())) for s in ("train.py", "sample.py")
    ]
    return {ref for text in texts for ref in CONFIG_REF.findall(text)}


def test_every_config_and_variant_named_exists():
    refs = _config_refs()
    assert len({name for name, _ in refs}) >= 9, refs  # every family's file is named somewhere
    for name, arg in sorted(refs):
        path = ROOT / "configs" / f"{name}.py"
        assert path.exists(), f"the docs name configs/{name}.py, which does not exist"
        module = config_module(path)
        known = set(getattr(module, "DATASETS", ())) | set(getattr(module, "VARIANTS", {}))
        for part in filter(None, arg.split(",")):
            assert part in known, f"configs/{name}.py:{arg}: {part!r} is not one of {known}"


def test_every_family_has_a_page_and_the_pages_name_real_families():
    named = set()
    for page in sorted((ROOT / "docs" / "families").glob("*.md")):
        for line in page.read_text().splitlines():
            m = FAMILY_LINE.match(line)
            if m:
                named |= set(re.findall(r"`(\w+)`", m.group(1)))
    assert named <= set(FAMILIES), named - set(FAMILIES)
    assert set(FAMILIES) <= named, f"no page under docs/families/ for {set(FAMILIES) - named}"
    readme = README.read_text()
    for name in FAMILIES:
        assert f"`{name}`" in readme, f"the README's families table lacks {name}"


def _commands() -> list[tuple[Path, str]]:
    """Every command line in a code block, with its continuation lines joined."""
    out = []
    for page in LIVE_PAGES:
        _, code = _split_fences(page.read_text())
        joined = "\n".join(code).replace("\\\n", " ")
        out += [(page, line) for line in joined.splitlines()]
    return out


def _defined(path: Path) -> set[str]:
    return set(DEFINED_FLAG.findall(path.read_text()))


@functools.cache
def _sample_options() -> frozenset[str]:
    names = set()
    for family in FAMILIES:
        for option in get_family(family).sample_options:
            names |= {option.name, *option.aliases}
    return frozenset(names)


TOOL = re.compile(r"python\S*\s+(?:\S*/)?(train\.py|sample\.py|-m jaxgen\.eval)\b")


def _flags_of(command: str) -> tuple[set[str], str] | None:
    """The flags that the tool a command runs accepts and the command's text after the tool's
    name (None: not one of our tools)."""
    m = TOOL.search(command)
    if m is None:
        return None
    rest = command[m.end() :]
    if m.group(1) == "train.py":
        return _defined(ROOT / "jaxgen" / "train.py") | ABSL_FLAGS, rest
    if m.group(1) == "sample.py":
        return _defined(ROOT / "jaxgen" / "sample.py") | _sample_options() | ABSL_FLAGS, rest
    main = ROOT / "jaxgen" / "eval" / "__main__.py"
    return _defined(main) | _sample_options() | ABSL_FLAGS, rest


def test_every_flag_in_a_command_exists():
    checked = 0
    for page, command in _commands():
        command = command.split("#")[0]  # a comment may name anything
        tool = _flags_of(command)
        if tool is None:
            continue
        accepted, args = tool
        for flag in FLAG.findall(args):
            checked += 1
            assert flag in accepted, f"{_rel(page)}: --{flag} is not a flag of: {command.strip()}"
    assert checked > 50  # the pages do show commands with flags


def test_the_flag_check_catches_a_made_up_flag():
    accepted, args = _flags_of("ssh --worker=all 'python train.py --config=c --workdir=w'")
    assert FLAG.findall(args) == ["config", "workdir"] and {"config", "workdir"} <= accepted
    assert FLAG.findall("python sample.py --workdir=w [--top-k=100] --config.train.x=1") == [
        "workdir",
        "top-k",
    ]
    assert "num_steps" not in _flags_of("python train.py")[0]
    assert _flags_of("python bench/gan_modes.py --steps 2000") is None


def test_every_jaxgen_name_in_the_docs_exists():
    names = set()
    for page in LIVE_PAGES:
        names |= set(JAXGEN_NAME.findall(page.read_text()))
    assert len(names) > 10
    for name in sorted(names):
        parts = name.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attr in parts[split:]:
                assert hasattr(obj, attr), f"the docs name {name}, which does not exist"
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"the docs name {name}, which cannot be imported")


def test_the_configs_guide_lists_every_file_its_data_sets_variants_and_family():
    row = re.compile(r"^\| `configs/(\w+)\.py` \| `(\w+)` \| ([\w, ]+) \| (.*) \|$")
    rows = {}
    for line in (ROOT / "docs" / "guides" / "configs.md").read_text().splitlines():
        m = row.match(line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    files = {p.stem for p in (ROOT / "configs").glob("*.py")} - {"__init__", "common"}
    assert set(rows) == files
    for name, (family, datasets, variants) in rows.items():
        module = config_module(ROOT / "configs" / f"{name}.py")
        assert [d.strip() for d in datasets.split(",")] == list(module.DATASETS), name
        assert set(re.findall(r"`(\w+)`", variants)) == set(module.VARIANTS), name
        assert module.get_config().family == family, name
