"""`streamctl init`: a commented starter project that validates, never overwriting by accident."""

from __future__ import annotations

from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import load_project


def test_init_creates_a_project_that_validates(tmp_path):
    target = tmp_path / "x"
    result = CliRunner().invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    for name in (
        "streamctl.yaml",
        "syncs/web-to-file.yaml",
        "contracts/web.yaml",
        "functions/enrich.py",
        "events.ndjson",
        ".gitignore",
    ):
        assert (target / name).is_file(), name
        assert f"created {target / name}" in result.stderr
    assert "# " in (target / "streamctl.yaml").read_text()  # commented for newcomers
    validated = CliRunner().invoke(app, ["validate", "--project", str(target), "--strict"], env={})
    assert validated.exit_code == 0, validated.stderr
    project = load_project(target, env={})
    assert [s.name for s in project.syncs] == ["web-to-file"]
    assert project.destinations["local-file"].config["path"] == str(
        target.resolve() / "out/events.ndjson"
    )


def test_init_defaults_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "streamctl.yaml").is_file()


def test_init_refuses_to_overwrite_without_force(tmp_path):
    (tmp_path / "streamctl.yaml").write_text("# mine\n")
    result = CliRunner().invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "would overwrite streamctl.yaml" in result.stderr
    assert "--force" in result.stderr
    assert (tmp_path / "streamctl.yaml").read_text() == "# mine\n"
    assert not (tmp_path / "syncs").exists()  # nothing half-written


def test_init_force_replaces_existing_files(tmp_path):
    (tmp_path / "streamctl.yaml").write_text("# mine\n")
    (tmp_path / "notes.txt").write_text("kept")
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0
    assert "sources:" in (tmp_path / "streamctl.yaml").read_text()
    assert (tmp_path / "notes.txt").read_text() == "kept"


def test_init_ships_sync_tests_that_pass(tmp_path):
    runner = CliRunner()
    target = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    result = runner.invoke(app, ["test", "--project", str(target)])
    assert result.exit_code == 0, result.output
    assert "the contract blocks an order whose total is not a number ... passed" in result.stdout
    assert "failed" not in result.stdout
