"""The command line: the parser and each command (check, doctor, bundle, demo, install-files). Nothing is imported here: a module of the package is loaded only by those who name it."""
