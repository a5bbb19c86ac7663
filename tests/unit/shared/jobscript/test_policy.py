import pytest

from shared.errors import ConfigError
from shared.jobscript.policy import REPO_PATH, load_policy, parse_policy, policy_path

pytestmark = pytest.mark.unit


def test_repository_policy_loads() -> None:
    policy = load_policy(REPO_PATH)
    assert policy.allowed_registries == ("nas-hub.local:5407",)
    assert policy.max_cpus == 2
    assert policy.roots_for("alice") == ("/mnt/test-k8s/results", "/mnt/test-k8s/home/alice")


def test_format_lists_comments_and_unknown_keys() -> None:
    policy = parse_policy(
        "# comment\n\nallowed_registries = a:1  b.local\nmax_cpus=8\nsomeone_elses_key = x\n"
    )
    assert policy.allowed_registries == ("a:1", "b.local")
    assert policy.max_cpus == 8


@pytest.mark.parametrize("text", ["max_cpus\n", "max_cpus = many\n", "writable_roots = rel\n"])
def test_bad_policy_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)


def test_env_variable_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURMK8S_POLICY", "/x/policy.conf")
    assert str(policy_path()) == "/x/policy.conf"
