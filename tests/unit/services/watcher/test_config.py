import pytest
from pydantic import ValidationError

from services.watcher.config import WatcherSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("mode", "forced"), [("auto", None), ("true", True), ("false", False)])
def test_force_polling_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, mode: str, forced: bool | None
) -> None:
    monkeypatch.setenv("WATCHER_FORCE_POLLING", mode)
    monkeypatch.setenv("WATCHER_STABILITY_WINDOW_S", "3.5")
    settings = WatcherSettings()
    assert settings.forced_polling is forced
    assert settings.stability_window_s == 3.5


def test_defaults_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WATCHER_FORCE_POLLING", "WATCHER_STABILITY_WINDOW_S"):
        monkeypatch.delenv(name, raising=False)
    settings = WatcherSettings()
    assert (settings.stability_window_s, settings.rescan_interval_s) == (2.0, 30.0)
    assert settings.forced_polling is None
    monkeypatch.setenv("WATCHER_FORCE_POLLING", "sometimes")
    with pytest.raises(ValidationError):
        WatcherSettings()
