"""Developer tools that read the code (not part of the installed platform); run from the repo root."""
