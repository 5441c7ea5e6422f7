"""What `interlink init` and `interlink new integration` write: a project, and an integration module.

Plain files (`interlink.scaffold` renders them): `project/` is the whole project `init` makes, `integration/` the pieces
of one integration; each `@{name}` is replaced by its value, a path part `dot-x` is written `.x`, `.tmpl` is dropped.
"""
