"""One module per adaptation method; importing them registers them in
`fedclf.registry.ADAPTATION_METHODS`."""

from fedclf.adapt.methods import cdan  # noqa: F401
from fedclf.adapt.methods import dann  # noqa: F401
from fedclf.adapt.methods import finetune  # noqa: F401
from fedclf.adapt.methods import fixmatch  # noqa: F401
from fedclf.adapt.methods import mdd  # noqa: F401
from fedclf.adapt.methods import source_only  # noqa: F401
from fedclf.adapt.methods import target_oracle  # noqa: F401
