"""Leaf helpers every layer shares and that import nothing of the library but errors: images (loading,
checking, content parts) and answer extraction. Tools, data, execution and serving build on them, so
none of those packages needs to import another for these."""
