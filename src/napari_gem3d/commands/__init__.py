"""Sub-commands of the ``gem3d`` CLI (one module each: ``add_arguments`` + ``run``)."""
