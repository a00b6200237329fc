"""The settings seam: one source of defaults, --help generated from it, layers that point one way."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from r21d_features.configs.schema import ALL_KEYS, PARTS, R21DConfig, help_footer, register_configs
from r21d_features.models.r21d import R21DExtractor, R21DSettings
from r21d_features.utils.core.errors import SettingsError, UserError
from r21d_features.utils.run.settings import RaySettings
from r21d_features.utils.core.settings import help_of, split_settings
from r21d_features.utils.run.settings import RunSettings
from tests.conftest import REPO_ROOT, run_main


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_every_key_is_declared_once_with_a_help_text():
    names = [f.name for part in PARTS["r21d"] for f in dataclasses.fields(part)]
    assert len(names) == len(set(names)) == len(ALL_KEYS)
    for part in PARTS["r21d"]:
        for f in dataclasses.fields(part):
            assert help_of(f).strip(), f"{part.__name__}.{f.name} has no help text"


def test_help_lists_every_key_with_its_help_text():
    proc = run_main("--help")
    assert proc.returncode == 0
    for part in PARTS["r21d"]:
        for f in dataclasses.fields(part):
            line = next((ln for ln in proc.stdout.splitlines() if ln.split()[:1] == [f.name]), None)
            assert line is not None, f"{f.name} missing from --help"
            assert help_of(f) in line


def test_cli_defaults_are_the_dataclass_defaults():
    cfg = _compose()
    for f in dataclasses.fields(R21DConfig):
        assert cfg[f.name] == f.default, f.name
    # and the parts, made with no argument, hold the same defaults
    for part in (R21DSettings, RunSettings, RaySettings):
        made = part()
        for f in dataclasses.fields(part):
            assert getattr(made, f.name) == cfg[f.name]


def test_yaml_holds_no_key_the_schema_lacks():
    keys = set(ALL_KEYS) | {"defaults", "hydra"}
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        assert set(data) <= keys, f"{path}: {sorted(set(data) - keys)}"


def test_help_footer_is_generated_from_the_fields():
    footer = _compose().hydra.help.footer
    assert footer == help_footer("r21d")
    assert "max_frame_pixels" in footer and "[default: 67108864]" in footer


def test_settings_check_their_values_in_one_line():
    with pytest.raises(SettingsError, match=r"^stack_size=0 is invalid"):
        R21DSettings(stack_size=0)
    with pytest.raises(SettingsError, match=r"^on_extraction='nope' is unknown; allowed: print, save_numpy"):
        RunSettings(on_extraction="nope")
    with pytest.raises(SettingsError, match=r"^ray_num_workers=0 is invalid"):
        RaySettings(ray_num_workers=0)
    with pytest.raises(SettingsError, match="unknown setting 'stack_sise'"):
        split_settings({"stack_sise": 3}, [RunSettings, R21DSettings])
    with pytest.raises(dataclasses.FrozenInstanceError):
        R21DSettings().stack_size = 3  # type: ignore[misc]


def test_extractor_takes_settings_or_keywords(tmp_path: Path):
    by_record = R21DExtractor(R21DSettings(device="cpu", random_weights=True, stack_size=4))
    by_keywords = R21DExtractor("r2plus1d_18_16_kinetics", device="cpu", random_weights=True, stack_size=4)
    assert by_record.settings == by_keywords.settings
    assert (by_keywords.stack_size, by_keywords.step_size) == (4, 16)  # null step: the model's default


def test_user_errors_share_one_base():
    from r21d_features.models.r21d.weights import WeightsUnavailableError
    from r21d_features.utils.video.ffmpeg import FFmpegError
    from r21d_features.utils.video.path_list import PathListError
    from r21d_features.utils.video.decoders import VideoDecodeError

    for cls in (WeightsUnavailableError, FFmpegError, PathListError, VideoDecodeError, SettingsError):
        assert issubclass(cls, UserError)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_utils_never_imports_models():
    """The ground floor (decode, windows, sinks, runners, CLI) knows no model: main.py wires them."""
    for path in sorted((REPO_ROOT / "utils").rglob("*.py")):
        bad = {name for name in _imports(path)
               if name.split(".")[0] == "models" or name.startswith("r21d_features.models")}
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def test_code_imports_itself_by_the_one_package_name():
    """Every import of our own code goes through r21d_features (what pip installs), never bare
    `models`/`utils`/`configs`/`main`, which would load a second copy or a user's own module."""
    roots = [REPO_ROOT / "main.py", *[p for d in ("utils", "models", "configs", "tests", "benchmarks", "scripts")
                                      for p in (REPO_ROOT / d).rglob("*.py")]]
    for path in roots:
        bare = {n for n in _imports(path) if n.split(".")[0] in ("models", "utils", "configs", "main")}
        assert not bare, f"{path.relative_to(REPO_ROOT)} imports {sorted(bare)}"


def test_core_code_never_imports_hydra():
    for folder in ("utils", "models"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            bad = {n for n in _imports(path) if n.split(".")[0] in ("hydra", "omegaconf")}
            assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"
