"""The ``bnn-priors`` command line (:mod:`bnn_priors.cli.main`)."""
