"""What the app's pages share, by concern: ``models`` (settings, the sidebar's model picker, models and per-image
results cached per process), ``inputs`` (the image input) and ``show`` (figures, tables and downloads). Nothing here
computes science: that is vitlens's, so the command line and the app show the same numbers."""
