"""Static files storage that links hashed, compressed names after `collectstatic` and plain names before it."""

from urllib.parse import unquote, urlsplit

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage that never fails a page for want of a manifest entry.

    Django's manifest storage raises "Missing staticfiles manifest entry" for every file
    `collectstatic` has not hashed, so an uncollected deployment answers 500 on every admin
    page. Here a file the manifest does not know keeps its plain name; WhiteNoise serves it
    from the apps' static folders (WHITENOISE_USE_FINDERS).
    """

    def stored_name(self, name: str) -> str:
        path = urlsplit(unquote(name)).path.strip()
        if self.hash_key(path) not in self.hashed_files:
            return name
        return super().stored_name(name)
