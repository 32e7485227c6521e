from pathlib import Path

import pytest

from tollway.config import Settings
from tollway.errors import ConfigurationError
from tollway.kit.signing import load_key_ring, rotate_signing_key


class TestKeyRing:
    def test_the_first_key_is_generated_once_and_kept(self, tmp_path: Path) -> None:
        first = load_key_ring(Settings(data_dir=tmp_path))
        again = load_key_ring(Settings(data_dir=tmp_path))
        assert first.current.kid == again.current.kid
        assert (tmp_path / "signing_keys.json").stat().st_mode & 0o777 == 0o600

    def test_signatures_verify_and_tampering_fails(self, tmp_path: Path) -> None:
        ring = load_key_ring(Settings(data_dir=tmp_path))
        kid, signature = ring.sign(b"artifact bytes")
        assert ring.verify(b"artifact bytes", signature, kid=kid)
        assert not ring.verify(b"artifact bytez", signature, kid=kid)

    def test_rotation_keeps_old_signatures_valid(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path)
        old_kid, old_signature = load_key_ring(settings).sign(b"v1")
        rotated = rotate_signing_key(settings)
        assert rotated.current.kid != old_kid
        assert rotated.verify(b"v1", old_signature, kid=old_kid)
        assert rotated.jwks()["keys"][0]["kid"] == rotated.current.kid

    def test_production_needs_configured_keys(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="TOLLWAY_SIGNING_KEYS"):
            load_key_ring(Settings(env="production", data_dir=tmp_path))
