"""`charter evaluate`: before-vs-after evaluation suites (work in progress: the code sandbox)."""
