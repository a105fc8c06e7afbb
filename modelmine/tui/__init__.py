"""``modelmine tui``: the Textual terminal UI of one local node (see docs/tui.md).

The only package of the project that imports Textual. ``app.make_app`` builds the app;
``bridge`` runs the trio control client in guest mode on Textual's loop.
"""
