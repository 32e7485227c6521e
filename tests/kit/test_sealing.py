import pytest

from tollway.kit.sealing import SealedValueInvalid, SecretBox, derive_key, keyed_digest


class TestSealing:
    def test_a_sealed_value_opens_with_its_key_only(self) -> None:
        box = SecretBox("server secret", purpose="totp-secret")
        sealed = box.seal("JBSWY3DPEHPK3PXP")
        assert "JBSWY3DPEHPK3PXP" not in sealed
        assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
        with pytest.raises(SealedValueInvalid):
            SecretBox("another secret", purpose="totp-secret").open(sealed)
        with pytest.raises(SealedValueInvalid):
            SecretBox("server secret", purpose="other").open(sealed)

    def test_purposes_get_independent_keys(self) -> None:
        assert derive_key("s", purpose="a") != derive_key("s", purpose="b")
        assert keyed_digest("s", "v", purpose="a") != keyed_digest("s", "v", purpose="b")
        assert keyed_digest("s", "v", purpose="a") == keyed_digest("s", "v", purpose="a")
