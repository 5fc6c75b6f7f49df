"""The store: stored tables, their files and the views analysts query."""
