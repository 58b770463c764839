"""Dataset converters to the st-gcn format (``{split}_data.npy`` + ``{split}_label.pkl``).

Command line: ``python -m stgcn.convert {kinetics,ntu,utd-mhad,recordings} SRC OUT [options]``.
"""

from .common import AtomicNpyWriter, BadInputError, ConversionError, write_pickle_atomic
from .kinetics import convert_kinetics, load_kinetics_clip, read_kinetics_json
from .ntu import convert_ntu, read_ntu_skeleton
from .recordings import convert_recordings, read_recording_sample
from .utd_mhad import convert_utd_mhad, read_utd_mhad, read_utd_mhad_mat

__all__ = [
    "AtomicNpyWriter", "BadInputError", "ConversionError", "convert_kinetics", "convert_ntu", "convert_recordings",
    "convert_utd_mhad", "load_kinetics_clip", "read_kinetics_json", "read_ntu_skeleton", "read_recording_sample",
    "read_utd_mhad", "read_utd_mhad_mat", "write_pickle_atomic",
]
