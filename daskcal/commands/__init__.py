"""The subcommands of ``daskcal``: one module each, each a
:class:`~daskcal.commands.arguments.Command`.
"""
