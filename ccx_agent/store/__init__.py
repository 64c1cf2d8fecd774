"""The state directory and the SQLite database in it. Nothing is imported here: a module of the package is loaded only by those who name it."""
