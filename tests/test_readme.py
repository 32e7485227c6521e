from pathlib import Path

from tollway.config import Settings

README = Path(__file__).parents[1] / "README.md"


class TestReadme:
    def test_every_setting_is_documented(self) -> None:
        text = README.read_text(encoding="utf-8")
        missing = [
            f"TOLLWAY_{name.upper()}"
            for name in Settings.model_fields
            if f"`TOLLWAY_{name.upper()}`" not in text
        ]
        assert missing == []

    def test_quick_start_is_the_two_commands(self) -> None:
        text = README.read_text(encoding="utf-8")
        assert "make run" in text
        assert "make test" in text
