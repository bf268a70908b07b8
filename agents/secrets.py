"""Provider API keys at rest: Fernet-encrypted with a key derived from SECRET_KEY (or
ORCHESTRA_ENCRYPTION_KEY), never stored or shown in plaintext."""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    material = settings.ORCHESTRA_ENCRYPTION_KEY or settings.SECRET_KEY
    key = base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest())
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """The plaintext, or ValueError when the key it was encrypted with is gone."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "The stored API key cannot be decrypted (SECRET_KEY or ORCHESTRA_ENCRYPTION_KEY "
            "changed). Enter it again."
        ) from None
