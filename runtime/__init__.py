"""The composition roots: the worker process and the command line wire ``consumers``,
``aggregators`` and the shared core ``voicemon`` together; nothing imports them."""
