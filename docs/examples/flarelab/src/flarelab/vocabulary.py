"""The task word this plug-in adds to learndock's open vocabulary (entry point
``learndock.vocabulary``)."""

VOCABULARY: dict[str, list[str]] = {"tasks": ["flare-detection"], "modalities": []}
