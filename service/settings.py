"""The service's settings: ``vinted_tagger.settings.ServiceSettings`` (``VINTED_TAGGER_*`` variables), plus the
decode budget in embed's terms."""

from __future__ import annotations

from embed.images import DecodeLimits
from vinted_tagger.settings import MB, ServiceSettings


class Settings(ServiceSettings):
    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(int(self.decode_max_megapixels * 1e6), int(self.decode_max_mb * MB), self.decode_max_frames)
