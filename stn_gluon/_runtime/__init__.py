"""The private floor every layer stands on: compatibility steps, errors, paths, files, devices, flags, threads
and MXNet's private APIs (one module). Imports nothing else of stn_gluon."""
