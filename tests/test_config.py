
import pytest
from tools import REPO

from phasegan_hpc.config import Config, config_from_dict, config_to_toml, load_config, with_overrides
from phasegan_hpc.errors import ConfigError


def test_synthetic_toml_is_the_paper_defaults():
    cfg = load_config(REPO / "configs" / "synthetic.toml")
    assert cfg == Config()
    assert cfg.physics.wavelength == 1e-10 and cfg.physics.pixel_size_m == 1e-6 and cfg.physics.distance_m == 0.1
    assert (cfg.phantom.delta, cfg.phantom.beta, cfg.phantom.t_max_m, cfg.phantom.max_objects) == (1e-3, 1e-6, 1e-8, 25)
    assert cfg.simulate.size == 256 and cfg.flatfield.n_components == 15


def test_toml_round_trip(tmp_path):
    cfg = with_overrides(Config(), {"simulate.size": 64, "physics.pad": 8, "flatfield.basis_file": 'a"b.h5'})
    p = tmp_path / "c.toml"
    p.write_text(config_to_toml(cfg))
    assert load_config(p) == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[physics]\npixel_size = 1e-6\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*unknown key 'physics\.pixel_size'"):
        load_config(p)
    p.write_text("[physic]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[physic\]"):
        load_config(p)


@pytest.mark.parametrize(
    "text, match",
    [
        ('[simulate]\nsize = "big"\n', "simulate.size must be int"),
        ("[simulate]\nsize = 64.0\n", "simulate.size must be int"),
        ("[simulate]\nn_train = true\n", "simulate.n_train must be int"),
        ("[flatfield]\nenabled = 1\n", "flatfield.enabled must be bool"),
        ("[simulate]\nsize = 8\n", "simulate.size must be >= 16"),
        ("[physics]\npixel_size_m = -1e-6\n", "pixel_size_m must be a positive number"),
        ("[physics]\nwavelength_m = 1e-10\nenergy_kev = 12.0\n", "exactly one"),
        ("[detector]\nphotons_per_frame = 0\n", "photons_per_frame"),
        ("physics = 3\n", r"\[physics\] must be a table"),
        ("[physics\n", "invalid TOML"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_energy_in_file_replaces_default_wavelength():
    cfg = config_from_dict({"physics": {"energy_kev": 25.7}})
    assert cfg.physics.wavelength_m is None
    assert cfg.physics.wavelength == pytest.approx(12.39841984e-10 / 25.7)
    assert cfg.phantom == Config().phantom


def test_int_accepted_for_float_and_missing_file():
    assert config_from_dict({"physics": {"distance_m": 1}}).physics.distance_m == 1.0
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/x.toml")


def test_overrides_are_validated():
    assert with_overrides(Config(), {"simulate.n_train": 5, "simulate.seed": None}).simulate.n_train == 5
    with pytest.raises(ConfigError, match="simulate.size"):
        with_overrides(Config(), {"simulate.size": 4})
