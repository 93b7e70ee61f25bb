"""Errors with messages meant for users: each says what went wrong and what to do."""


class PanoSAMicError(ValueError):
    """Base class of every error PanoSAMic raises on purpose."""


class ConfigError(PanoSAMicError):
    """A configuration that cannot describe a PanoSAMic model."""


class InputError(PanoSAMicError):
    """A panorama, depth map, normal map or prompt the model cannot use as given."""


class WeightsError(PanoSAMicError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""
