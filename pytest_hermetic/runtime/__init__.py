"""Kernel mechanics: namespaces, cgroups, the root filesystem, the network and
the container process.  Nothing here imports pytest or IPython, and nothing
here knows about images: it is handed a list of layer directories.
"""
