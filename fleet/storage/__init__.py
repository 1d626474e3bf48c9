"""Storage: the schema (versioned migrations), connections and the embedded server."""
