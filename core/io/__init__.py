"""File I/O: the only part of cryosr that imports mrcfile, starfile and tifffile."""

from cryosr.core.io.atomic import atomic_path
from cryosr.core.io.movie import Movie, read_gain, read_movie
from cryosr.core.io.mrc import Micrograph, read_micrograph, read_mrc_header, write_mrc
from cryosr.core.io.star import read_star, write_star

__all__ = [
    "Micrograph",
    "Movie",
    "atomic_path",
    "read_gain",
    "read_micrograph",
    "read_movie",
    "read_mrc_header",
    "read_star",
    "write_mrc",
    "write_star",
]
