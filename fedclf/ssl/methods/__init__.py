"""One module per SSL method; importing them registers them in
`fedclf.registry.SSL_METHODS`."""

from fedclf.ssl.methods import barlow_twins  # noqa: F401
from fedclf.ssl.methods import byol  # noqa: F401
from fedclf.ssl.methods import simclr  # noqa: F401
from fedclf.ssl.methods import simsiam  # noqa: F401
from fedclf.ssl.methods import vicreg  # noqa: F401
