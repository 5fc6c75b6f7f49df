"""One module per ``agentwatch`` subcommand: parse flags, call the packages."""
