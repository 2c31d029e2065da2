"""CLI verbs that are not owned by a subpackage."""
