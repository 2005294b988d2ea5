"""The errors that mean "the input is wrong" (not "prefixlab is broken"): entry points print
them as one line naming the thing at fault, without a traceback."""

from prefixlab.config import ConfigError
from prefixlab.engine.export import PrefixFormatError
from prefixlab.engine.families import UnsupportedModelError
from prefixlab.methods import MethodNotSupportedError
from prefixlab.training.model_loading import ModelNotFoundError, RemoteCodeError
from prefixlab.training.resume import CheckpointError
from prefixlab.run.storage import OutputDirError
from prefixlab.tasks import DataError

USER_ERRORS = (ConfigError, ModelNotFoundError, DataError, PrefixFormatError, UnsupportedModelError, OutputDirError,
               MethodNotSupportedError, CheckpointError, RemoteCodeError)
