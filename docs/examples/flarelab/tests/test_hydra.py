"""flarelab's config group reaches Hydra; its task word reaches the semantic spec."""

from components.base import instantiate
from hydra import compose, initialize

from flarelab import FlareDetector


def test_config_group_composes_and_instantiates():
    with initialize(version_base=None, config_path=None):
        cfg = compose(overrides=["+detection=flarelab_flares_kepler_lc"])
    module = instantiate(cfg.detection)
    assert isinstance(module, FlareDetector)
    assert module.config()["window"] == 145


def test_task_vocabulary_extended_by_entry_point():
    from specs.semantic import known_tasks

    assert "flare-detection" in known_tasks()


def test_learndock_run_sees_the_config():
    """`learndock run detection=flarelab_flares` composes learndock's own config with ours."""
    from pipelines.cli_run import compose_config

    cfg = compose_config(["detection=flarelab_flares", "detection.threshold=4.0"])
    module = instantiate(cfg.detection)
    assert isinstance(module, FlareDetector)
    assert module.config()["threshold"] == 4.0
