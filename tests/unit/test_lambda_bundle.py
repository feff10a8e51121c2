"""Lambda packaging without Docker: the layer holds Linux x86_64 wheels for the Lambda Python version."""

from __future__ import annotations

import pytest

from infra.build import lambda_bundle


@pytest.fixture(scope="module")
def layer():
    return lambda_bundle.build_dependencies() / "python"


def test_layer_has_every_pinned_package_built_for_lambda(layer):
    assert (layer / "aws_lambda_powertools").is_dir()
    assert (layer / "jwt").is_dir()
    binaries = list((layer / "cryptography").rglob("*.so"))
    assert binaries, "cryptography must come as a compiled manylinux wheel"
    assert all("x86_64" in path.name or "abi3" in path.name for path in binaries)
    assert not list(layer.rglob("*.dylib")), "no macOS binaries"
    assert not list(layer.rglob("*.pyd")), "no Windows binaries"


def test_code_asset_carries_handlers_and_shared_package_but_not_synth_only_modules():
    code = lambda_bundle.build_code()
    shipped = {str(path.relative_to(code)) for path in code.rglob("*.py")}
    assert "modelgate/parameters.py" in shipped
    assert "infra/config.py" not in shipped, "config parsing needs pydantic/yaml and only runs at synth"
    assert not [name for name in shipped if name.startswith(("stacks/", "infra/", "tests/"))]


# What only synth needs: the CDK app and its constructs, config parsing and its libraries.
SYNTH_ONLY = ("infra", "stacks", "aws_cdk", "constructs", "cdk_nag", "pydantic", "yaml")


def test_no_shipped_module_imports_synth_time_code_when_it_loads():
    """The separation is by package, not by file name: nothing the bundle carries imports a synth-time package
    at import time (the CLI's lazy config reads run on a workstation, never in Lambda)."""
    import ast

    code = lambda_bundle.build_code()
    offenders = []
    for path in sorted(code.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(code)}: {n}" for n in names if n.split(".")[0] in SYNTH_ONLY]
            # and every project module it imports travels with it (a file-name exclusion left
            # modelgate/preflight.py shipped without the modelgate/config.py it imports)
            offenders += [
                f"{path.relative_to(code)}: {n} (not shipped)"
                for n in names
                if n.split(".")[0] in ("modelgate", "lambdas")
                and not (code / f"{n.replace('.', '/')}.py").exists()
                and not (code / n.replace(".", "/") / "__init__.py").exists()
            ]
    assert offenders == []


def test_asset_hashes_are_stable_and_follow_content(tmp_path, monkeypatch):
    assert lambda_bundle.code_hash() == lambda_bundle.code_hash()
    before = lambda_bundle.dependencies_hash()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(lambda_bundle.REQUIREMENTS.read_text() + "\n# changed\n")
    monkeypatch.setattr(lambda_bundle, "REQUIREMENTS", requirements)
    assert lambda_bundle.dependencies_hash() != before


def test_an_uninstallable_requirement_fails_with_a_clear_message(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this-package-does-not-exist-modelgate==0.0.1\n")
    monkeypatch.setattr(lambda_bundle, "REQUIREMENTS", requirements)
    monkeypatch.setattr(lambda_bundle, "CACHE", tmp_path / "cache")
    with pytest.raises(lambda_bundle.BundlingError, match="could not install"):
        lambda_bundle.build_dependencies()
    assert not list((tmp_path / "cache" / "lambda-layer").iterdir()), "no half-built layer is left behind"


def test_a_package_over_lambdas_250_mb_fails_synth_naming_its_parts():
    """With the model lists in the code package, Lambda's unzipped package limit (code + layers, 250 MB) is what
    bounds them: synth says so before a deploy would."""
    sizes = {"code": 1_000_000, "settings files": 200 * 60, "dependencies layer": 40_000_000}
    assert lambda_bundle.check_package_size("f", sizes) == 41_012_000
    with pytest.raises(lambda_bundle.BundlingError, match=r"f: .* 41,012,000 bytes unzipped \(code 1,000,000, "):
        lambda_bundle.check_package_size("f", sizes, limit=41_000_000)
    assert lambda_bundle.PACKAGE_LIMIT == 250 * 1024 * 1024  # 262,144,000 bytes, as Lambda's refusal says


def test_settings_files_are_plain_json_names_at_the_package_root():
    for name in ("../escape.json", "lambdas", "models.txt"):
        with pytest.raises(lambda_bundle.BundlingError, match="not a settings file name"):
            lambda_bundle.function_code("f", {name: "[]"})
