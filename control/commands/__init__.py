"""The control socket's commands, one module per verb family, each a part plugged into the daemon."""
