"""Secrets are masked wherever text may reach a message or a log."""

from shared.redaction import redact


def test_storage_keys_sas_and_uri_passwords_are_masked():
    text = (
        "AccountName=a;AccountKey=c2VjcmV0;SharedAccessSignature=sv=1&sig=abc "
        "mongodb+srv://user:p%40ss@cluster.example.net/db?sig=xyz"
    )
    masked = redact(text)
    for secret in ("c2VjcmV0", "sv=1&sig=abc", "p%40ss", "user:", "xyz"):
        assert secret not in masked
    assert "AccountName=a" in masked and "cluster.example.net" in masked
