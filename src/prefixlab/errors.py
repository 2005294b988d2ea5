"""The errors that mean "the input is wrong" (not "prefixlab is broken"): entry points print
them as one line naming the thing at fault, without a traceback."""

from .config import ConfigError
from .engine.export import PrefixFormatError
from .engine.families import UnsupportedModelError
from .methods import MethodNotSupportedError
from .model_loading import ModelNotFoundError, RemoteCodeError
from .resume import CheckpointError
from .runs import OutputDirError
from .tasks import DataError

USER_ERRORS = (ConfigError, ModelNotFoundError, DataError, PrefixFormatError, UnsupportedModelError, OutputDirError,
               MethodNotSupportedError, CheckpointError, RemoteCodeError)
