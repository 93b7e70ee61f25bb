"""Network modules: encoder (SAM ViT with taps), fusion, semantic decoder, and the whole network."""

from .decoder import SemanticDecoder, SphericalConv2d, longitude_encoding
from .encoder import TappedImageEncoderViT
from .fusion import ChannelAttention, FeatureFuser, FusionBlock, SpatialAttention
from .network import PanoSAMic

__all__ = [
    "PanoSAMic", "TappedImageEncoderViT", "FeatureFuser", "FusionBlock", "ChannelAttention",
    "SpatialAttention", "SemanticDecoder", "SphericalConv2d", "longitude_encoding",
]
