"""``python -m r21d_features.utils.hdf5_merge <folder>``: the HDF5 merge command under its documented name.

The command itself lives with the HDF5 sink, in :mod:`r21d_features.utils.outputs.hdf5_merge`.
"""

import sys

from r21d_features.utils.outputs.hdf5_merge import main

if __name__ == "__main__":
    sys.exit(main())
