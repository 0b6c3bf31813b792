"""Hydra search-path plugin: makes flarelab's config groups visible to every Hydra app."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class FlarelabSearchPathPlugin(SearchPathPlugin):
    """Append ``pkg://flarelab.conf`` to the config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="flarelab", path="pkg://flarelab.conf")
