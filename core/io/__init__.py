"""File I/O: the only part of cryosr that imports mrcfile, starfile and tifffile."""

from cryosr.core.io.atomic import atomic_path
from cryosr.core.io.motion_star import RelionMotion, read_relion_motion
from cryosr.core.io.movie import Movie, MovieHeader, read_gain, read_movie, read_movie_header
from cryosr.core.io.mrc import Micrograph, read_micrograph, read_mrc_header, write_mrc
from cryosr.core.io.star import read_star, write_star

__all__ = [
    "Micrograph",
    "Movie",
    "MovieHeader",
    "RelionMotion",
    "atomic_path",
    "read_gain",
    "read_micrograph",
    "read_movie",
    "read_movie_header",
    "read_mrc_header",
    "read_relion_motion",
    "read_star",
    "write_mrc",
    "write_star",
]
