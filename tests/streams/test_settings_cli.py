"""``driftstream settings`` shows what is in force, and a wrong setting is one line (issue 15, item 4);
long commands show progress on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import Settings, describe_settings, effective_settings, unknown_variables


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("DRIFTSTREAM_")]:
        monkeypatch.delenv(name)


def settings_output(monkeypatch: pytest.MonkeyPatch, **variables: str) -> dict[str, str]:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    shown = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition("=")
        shown[name] = rest
    return shown


def test_every_setting_has_a_one_line_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"settings without a description: {missing}"
    for name, field in Settings.model_fields.items():
        assert "\n" not in (field.description or ""), name


def test_settings_shows_the_values_in_force(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "driftstream.toml"
    config.write_text('window_size = 2000\napp_id = "from-file"\n[models.fraud]\nsegments = ["region"]\n')
    shown = settings_output(monkeypatch, DRIFTSTREAM_CONFIG=str(config), DRIFTSTREAM_APP_ID="from-env",
                            DRIFTSTREAM_NUMERIC_TESTS='["psi","ks"]', DRIFTSTREAM_CREATE_TOPICS="false")  # fmt: skip
    assert shown["DRIFTSTREAM_WINDOW_SIZE"].startswith("2000  # ") and shown["DRIFTSTREAM_WINDOW_SIZE"].endswith(
        "[file]")
    assert shown["DRIFTSTREAM_APP_ID"].startswith("from-env  # ") and shown["DRIFTSTREAM_APP_ID"].endswith("[env]")
    # Lists in the syntax the environment takes (JSON), quoted for a shell.
    assert shown["DRIFTSTREAM_NUMERIC_TESTS"].startswith("""'["psi","ks"]'  # """)
    assert shown["DRIFTSTREAM_CATEGORICAL_TESTS"].startswith("""'["psi","chi_square","unseen_rate","null_rate"]'""")
    assert shown["DRIFTSTREAM_CREATE_TOPICS"].startswith("false  # ")
    assert shown["DRIFTSTREAM_TOPIC_EVENTS"] .startswith("inference-events  # topic")
    assert json.loads(shown["DRIFTSTREAM_MODELS"].split("'")[1]) == {"fraud": {"segments": ["region"]}}
    assert set(shown) == {f"DRIFTSTREAM_{name.upper()}" for name in Settings.model_fields}


def test_what_settings_prints_reads_back_as_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = settings_output(monkeypatch, DRIFTSTREAM_RETRAIN_ON='["performance"]', DRIFTSTREAM_PSI_BINS="12")
    environment = {}
    for name, rest in shown.items():
        value = rest.split("  # ")[0]
        if name != "DRIFTSTREAM_MODELS":  # unset ones too: VAR= reads back as unset
            environment[name] = subprocess.run(["sh", "-c", f"printf %s {value}"], capture_output=True, text=True,
                                               check=True).stdout  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.retrain_on == ("performance",) and again.psi_bins == 12
    assert again == Settings(retrain_on=("performance",), psi_bins=12)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = settings_output(monkeypatch, DRIFTSTREAM_REDIS_PASSWORD="hunter2", DRIFTSTREAM_KAFKA_SASL_PASSWORD="pw1",
                            DRIFTSTREAM_REDIS_URL="redis://bob:urlsecret@cache:6380/2")  # fmt: skip
    text = "\n".join(shown.values())
    assert "hunter2" not in text and "pw1" not in text and "urlsecret" not in text
    assert shown["DRIFTSTREAM_REDIS_PASSWORD"].startswith("'***'")
    assert shown["DRIFTSTREAM_REDIS_URL"].startswith("'redis://bob:***@cache:6380/2'")
    assert shown["DRIFTSTREAM_REDIS_SENTINEL_PASSWORD"].startswith("  # ")  # unset


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"DRIFTSTREAM_WEB_PORT": "0"}, "DRIFTSTREAM_WEB_PORT=0: Input should be greater than or equal to 1"),
        ({"DRIFTSTREAM_WINDW_SIZE": "5"}, "DRIFTSTREAM_WINDW_SIZE names no setting (did you mean "
                                          "DRIFTSTREAM_WINDOW_SIZE?)"),
        ({"DRIFTSTREAM_NUMERIC_TESTS": "psi,ks"}, "DRIFTSTREAM_NUMERIC_TESTS"),
        ({"DRIFTSTREAM_NUMERIC_TESTS": '["psi","kss"]'}, "numeric_tests: 'kss' is not one of"),
        ({"DRIFTSTREAM_REDIS_URL": "localhost:6379"}, "DRIFTSTREAM_REDIS_URL=localhost:6379: must start with"),
        ({"DRIFTSTREAM_REDIS_PASSWORD": "x" * 3, "DRIFTSTREAM_REDIS_URL": "redis://:urlpw@h"}, None),
        ({"DRIFTSTREAM_CONFIG": "/nonexistent/driftstream.toml"}, "DRIFTSTREAM_CONFIG=/nonexistent/driftstream.toml: "
                                                                  "no such file"),
    ],
)
def test_an_invalid_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str],
                                        expected: str | None) -> None:  # fmt: skip
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["settings"])
    if expected is None:  # valid after all: nothing on stderr
        assert result.exit_code == 0 and result.stderr == ""
        return
    print(result.stderr)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: settings: ") and expected in lines[0], result.stderr


def test_a_config_file_typo_is_one_line_with_a_suggestion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "driftstream.toml"
    config.write_text('windw_size = 3\n[models.fraud]\nsegmnts = ["region"]\n')
    monkeypatch.setenv("DRIFTSTREAM_CONFIG", str(config))
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert f"DRIFTSTREAM_CONFIG={config}: windw_size names no setting (did you mean window_size?)" in line
    assert "models.fraud.segmnts names no setting (did you mean segments?)" in line


def test_unknown_variables_spare_the_config_file_and_the_test_suite() -> None:
    environ = {"DRIFTSTREAM_CONFIG": "x", "DRIFTSTREAM_TEST_KAFKA": "x", "DRIFTSTREAM_APP_ID": "x",
               "driftstream_window_size": "3", "DRIFTSTREAM_TYPO": "x", "OTHER": "x"}  # fmt: skip
    assert unknown_variables(environ) == ["DRIFTSTREAM_TYPO"]


def test_help_lists_defaults_with_lists_as_json() -> None:
    text = describe_settings()
    assert 'DRIFTSTREAM_NUMERIC_TESTS=["psi","ks","null_rate","out_of_range"]' in text
    assert len(text.splitlines()) == len(Settings.model_fields) - 1  # all but models (TOML)


def test_effective_settings_names_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTSTREAM_PSI_BINS", "12")
    rows = {variable: (text, source) for variable, text, source, _ in effective_settings(Settings())}
    assert rows["DRIFTSTREAM_PSI_BINS"] == ("12", "env")
    assert rows["DRIFTSTREAM_WINDOW_SIZE"] == ("1000", "default")


# -- progress on a terminal ------------------------------------------------------------------------


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``driftstream ARGS`` with stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "streams", *args], env=env, stdout=subprocess.PIPE,
                               stderr=follower, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = process.stdout.read().decode() if process.stdout else ""
    code = process.wait(60)
    os.close(leader)
    return code, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.integration
def test_simulate_shows_progress_on_a_terminal_only(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    env["DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    code, stdout, terminal = on_a_terminal(["simulate", "--count", "2000", "--rate", "4000"], env)
    assert code == 0 and stdout.strip() == "sent 2000 events", (stdout, terminal)
    assert "simulate: events sent" in terminal and "2000/2000" in terminal, terminal
    piped = subprocess.run([sys.executable, "-m", "streams", "simulate", "--count", "10", "--rate", "0"], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert piped.stdout.strip() == "sent 10 events" and piped.stderr == ""


def test_baseline_shows_progress_on_a_terminal(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text("a,b\n" + "".join(f"{i * 0.5},{'pq'[i % 2]}\n" for i in range(120_000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    env["DRIFTSTREAM_REDIS_URL"] = redis_url
    code, stdout, terminal = on_a_terminal(["baseline", "fraud", str(path)], env)
    assert code == 0 and "2 feature(s)" in stdout, (stdout, terminal)
    assert "baseline: rows of train.csv read" in terminal and "120,000" in terminal, terminal


def test_plain_environment_variables_do_not_leak_into_a_model_s_table(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path) -> None:  # fmt: skip
    config = tmp_path / "driftstream.toml"
    config.write_text('[models.fraud]\nsegments = ["region"]\n')
    monkeypatch.setenv("DRIFTSTREAM_CONFIG", str(config))
    monkeypatch.setenv("TASK", "regression")  # a variable of something else on the same machine
    monkeypatch.setenv("EVENT_RATE", "not a number")
    model = Settings().models["fraud"]
    assert model.task == "auto" and model.event_rate is None and model.segments == ["region"]


def test_constraints_and_stale_after_come_from_the_config_file(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:  # fmt: skip
    config = tmp_path / "driftstream.toml"
    config.write_text('[models.fraud]\nstale_after = 30\n[models.fraud.constraints.amount]\nmin = 0\nmax = 1e5\n'
                      'not_null = true\n[models.fraud.constraints.country]\nallowed = ["DE", "FR", 7, true]\n'
                      'max_share = 0.01\n')  # fmt: skip
    monkeypatch.setenv("DRIFTSTREAM_CONFIG", str(config))
    settings = Settings()
    constraints = settings.constraints("fraud")
    assert (constraints["amount"].min, constraints["amount"].max, constraints["amount"].not_null) == (0.0, 1e5, True)
    assert constraints["country"].allowed == ("DE", "FR", "7", "true") and constraints["country"].max_share == 0.01
    assert settings.constraints("other") == {}
    assert settings.monitor_config("fraud").stale_after == 30.0 and settings.monitor_config().stale_after == 600.0


@pytest.mark.parametrize(("table", "expected"), [
    ("minn = 0", "constraints.amount: unknown rule 'minn'; the rules are min, max, allowed"),
    ("min = 5\nmax = 1", "constraints.amount: min"),
    ("allowed = \"DE\"", "constraints.amount.allowed must be a list"),
    ("max_share = 2", "constraints.amount: max_share"),
])  # fmt: skip
def test_a_bad_constraint_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table: str,
                                                expected: str) -> None:  # fmt: skip
    config = tmp_path / "driftstream.toml"
    config.write_text(f"[models.fraud.constraints.amount]\n{table}\n")
    monkeypatch.setenv("DRIFTSTREAM_CONFIG", str(config))
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert expected in line, line
